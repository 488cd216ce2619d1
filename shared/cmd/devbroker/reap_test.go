package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"rooms/shared/testenv"
)

// TestReaperRemovesAMemberThatDiedInJoin has members join stable groups
// and die while their JoinGroup waits for the rebalance. kfake answers such
// a join on a closed connection as if it were delivered about half the
// time (a select between the answer and the closed connection), and only
// then starts the member's session timer; the other half the dead member
// stays in its group with its partitions for good. So each subtest runs
// twelve groups at once: without the reaper at least one dead member must
// outlive its session timeout (this fails the day kfake removes them all
// itself, and the reaper can go; by chance, once in 4096 runs), and with
// the reaper every dead member must be gone and every live member own all
// the partitions again.
func TestReaperRemovesAMemberThatDiedInJoin(t *testing.T) {
	const session = 6 * time.Second // kfake's group.min.session.timeout.ms
	const groups = 12
	for _, reaping := range []bool{false, true} {
		name := "kfake alone"
		if reaping {
			name = "with the reaper"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := testenv.Kafka(t, kfake.SeedTopics(4, "t"))
			addr := c.ListenAddrs()[0]
			logs := &testenv.Output{}
			if reaping {
				admin, err := kgo.NewClient(kgo.SeedBrokers(addr))
				if err != nil {
					t.Fatal(err)
				}
				defer admin.Close()
				wg := startReaper(ctx, c, admin, 200*time.Millisecond, slog.New(slog.NewJSONHandler(logs, nil)))
				defer wg.Wait()
				defer cancel()
			}
			// A live member's JoinGroup, which completes the rebalance the
			// dying member started, is held until the dying member's
			// connection is closed.
			var mu sync.Mutex
			held := map[string]chan struct{}{}
			c.ControlKey(int16(kmsg.JoinGroup), func(req kmsg.Request) (kmsg.Response, error, bool) {
				mu.Lock()
				release := held[req.(*kmsg.JoinGroupRequest).MemberID]
				mu.Unlock()
				if release != nil {
					c.SleepControl(func() { <-release })
				}
				return nil, nil, false
			})

			dead := make([]string, groups)
			var wg sync.WaitGroup
			for i := range groups {
				wg.Go(func() {
					group := fmt.Sprintf("g%d", i)
					live, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup(group), kgo.ConsumeTopics("t"),
						kgo.Balancers(kgo.RangeBalancer()), kgo.SessionTimeout(session),
						kgo.HeartbeatInterval(time.Second), kgo.RebalanceTimeout(10*time.Second))
					if err != nil {
						t.Error(err)
						return
					}
					t.Cleanup(live.Close)
					go func() {
						for ctx.Err() == nil {
							live.PollFetches(ctx)
						}
					}()
					if !waitGroup(c, group, 30*time.Second, func(g *kfake.GroupInfo) bool {
						return g.State == "Stable" && len(g.Members) == 1 && g.NumAssigned() == 4
					}) {
						t.Errorf("%s: the live member never owned all 4 partitions", group)
						return
					}
					release := make(chan struct{})
					mu.Lock()
					held[c.GroupInfo(group).Members[0].MemberID] = release
					mu.Unlock()
					id, err := dieInJoin(ctx, c, addr, group, session)
					close(release)
					if err != nil {
						t.Errorf("%s: %v", group, err)
						return
					}
					dead[i] = id
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			died := time.Now()
			time.Sleep(session + reapGrace + 3*time.Second)
			kept := 0
			for i := range groups {
				g := c.GroupInfo(fmt.Sprintf("g%d", i))
				if memberOwns(g, dead[i]) > 0 || len(g.Members) != 1 {
					kept++
				}
			}
			t.Logf("%d of %d dead members still in their group %v after they died", kept, groups, time.Since(died).Round(time.Second))
			if !reaping {
				if kept == 0 {
					t.Fatal("kfake removed every dead member by itself; the reaper is no longer needed")
				}
				return
			}
			for i := range groups {
				group := fmt.Sprintf("g%d", i)
				if !waitGroup(c, group, 20*time.Second, func(g *kfake.GroupInfo) bool {
					return g.State == "Stable" && len(g.Members) == 1 && g.NumAssigned() == 4 && memberOwns(g, dead[i]) == 0
				}) {
					g := c.GroupInfo(group)
					t.Fatalf("%s (%s): the dead member %s still there: %+v\nreaper's log:\n%s", group, g.State, dead[i], g.Members, logs.String())
				}
			}
			if !strings.Contains(logs.String(), "removed a group member silent for longer than its session timeout") {
				t.Fatalf("no removal logged:\n%s", logs.String())
			}
		})
	}
}

// dieInJoin joins group as a new member, waits until the broker has started
// the rebalance the join asks for, and closes the connection before the
// answer. It returns the dead member's id.
func dieInJoin(ctx context.Context, c *kfake.Cluster, addr, group string, session time.Duration) (string, error) {
	dying, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return "", err
	}
	defer dying.Close()
	join := kmsg.NewPtrJoinGroupRequest()
	join.Group, join.ProtocolType = group, "consumer"
	join.SessionTimeoutMillis = int32(session / time.Millisecond)
	join.RebalanceTimeoutMillis = 10000
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Topics = []string{"t"}
	proto := kmsg.NewJoinGroupRequestProtocol()
	proto.Name, proto.Metadata = "range", meta.AppendTo(nil)
	join.Protocols = append(join.Protocols, proto)
	first, err := join.RequestWith(ctx, dying)
	if err != nil || first.MemberID == "" {
		return "", fmt.Errorf("first join: %v (member id %q)", err, first.MemberID)
	}
	join.MemberID = first.MemberID
	go func() { _, _ = join.RequestWith(ctx, dying) }()
	if !waitGroup(c, group, 10*time.Second, func(g *kfake.GroupInfo) bool { return g.State == "PreparingRebalance" }) {
		return "", errors.New("the join started no rebalance")
	}
	dying.Close()
	time.Sleep(500 * time.Millisecond) // for the broker to see the connection closed
	return join.MemberID, nil
}

// waitGroup reports whether cond came to hold for group within timeout.
func waitGroup(c *kfake.Cluster, group string, timeout time.Duration, cond func(*kfake.GroupInfo) bool) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if g := c.GroupInfo(group); g != nil && cond(g) {
			return true
		}
	}
	return false
}

// memberOwns is how many partitions member holds in g.
func memberOwns(g *kfake.GroupInfo, member string) int {
	for _, m := range g.Members {
		if m.MemberID == member {
			return m.NumAssigned()
		}
	}
	return 0
}
