package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The reaper makes up for a gap in kfake's classic consumer groups. A member
// whose connection dies while its JoinGroup waits for a rebalance stays in
// the group without a session timer: kfake starts the timer only once the
// JoinGroup answer has been delivered, and the leader's SyncGroup clears the
// timer that removes members that never sync. The leader then assigns the
// dead member its share of the partitions, nobody consumes them, and no
// rebalance ever takes them back: a worker killed during a rebalance stalls
// its rooms until the broker restarts. Kafka removes such a member when its
// session times out (KAFKA_SESSION_TIMEOUT, 10 s for the workers), and so
// does the reaper, from outside kfake: it notes every request that shows a
// member alive (JoinGroup with a member id, SyncGroup, Heartbeat,
// OffsetCommit) and, in a stable group, where every live member heartbeats,
// removes a member not heard from for longer than its session timeout with
// a LeaveGroup request, which starts the rebalance Kafka would.
//
// TestReaperRemovesAMemberThatDiedInJoin reproduces the gap (and fails the
// day kfake fixes it, so that this can go).

// reapGrace is how much longer than its session timeout a member may stay
// silent before it is removed.
const reapGrace = 2 * time.Second

// memberKey names a member of a group.
type memberKey struct{ group, member string }

// heard is when a member was last heard from, and its session timeout.
type heard struct {
	at      time.Time
	session time.Duration
}

type reaper struct {
	log *slog.Logger
	cl  *kgo.Client

	mu    sync.Mutex
	heard map[memberKey]heard
}

// startReaper watches c's group requests and reaps every interval until ctx
// is done. cl is a client of c.
func startReaper(ctx context.Context, c *kfake.Cluster, cl *kgo.Client, interval time.Duration, log *slog.Logger) *sync.WaitGroup {
	r := &reaper{log: log, cl: cl, heard: map[memberKey]heard{}}
	for _, key := range []kmsg.Key{kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.OffsetCommit} {
		c.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			r.note(req)
			return nil, nil, false // observed only: kfake handles it
		})
	}
	var wg sync.WaitGroup
	wg.Go(func() { every(ctx, interval, func() { r.reap(ctx, c) }) })
	return &wg
}

// note records that a request came from a member.
func (r *reaper) note(req kmsg.Request) {
	var group, member string
	var session time.Duration
	switch q := req.(type) {
	case *kmsg.JoinGroupRequest:
		group, member, session = q.Group, q.MemberID, time.Duration(q.SessionTimeoutMillis)*time.Millisecond
	case *kmsg.SyncGroupRequest:
		group, member = q.Group, q.MemberID
	case *kmsg.HeartbeatRequest:
		group, member = q.Group, q.MemberID
	case *kmsg.OffsetCommitRequest:
		group, member = q.Group, q.MemberID
	}
	if member == "" {
		return
	}
	k := memberKey{group, member}
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.heard[k]
	h.at = time.Now()
	if session > 0 {
		h.session = session
	}
	r.heard[k] = h
}

// reap removes, from every stable group, the members silent for longer than
// their session timeout. Only members seen joining (the classic protocol's
// JoinGroup, which gives the session timeout) are judged; the rest, such as
// the members kfake restores from its data folder with their session
// timers running, are left to kfake.
func (r *reaper) reap(ctx context.Context, c *kfake.Cluster) {
	now := time.Now()
	groups := map[string]bool{}
	r.mu.Lock()
	for k := range r.heard {
		groups[k.group] = true
	}
	r.mu.Unlock()
	for group := range groups {
		info := c.GroupInfo(group)
		live := map[memberKey]bool{}
		if info != nil {
			for _, m := range info.Members {
				live[memberKey{group, m.MemberID}] = true
			}
		}
		var dead []silentMember
		r.mu.Lock()
		for k, h := range r.heard {
			// Gone from the group, and not just about to join it: the
			// snapshot above may predate a JoinGroup already noted.
			if k.group == group && !live[k] && now.Sub(h.at) > max(h.session+reapGrace, time.Minute) {
				delete(r.heard, k)
			}
		}
		if info != nil && info.State == "Stable" {
			for _, m := range info.Members {
				k := memberKey{group, m.MemberID}
				h := r.heard[k]
				if h.session <= 0 {
					continue // not seen joining: left to kfake
				}
				if silent := now.Sub(h.at); silent > h.session+reapGrace {
					dead = append(dead, silentMember{m, silent})
				}
			}
		}
		r.mu.Unlock()
		for _, d := range dead {
			r.remove(ctx, group, d.GroupMember, d.silent)
		}
	}
}

// silentMember is a member to remove, and how long it has been silent.
type silentMember struct {
	kfake.GroupMember
	silent time.Duration
}

// remove asks the broker to drop member m of group.
func (r *reaper) remove(ctx context.Context, group string, m kfake.GroupMember, silent time.Duration) {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = group
	lm := kmsg.NewLeaveGroupRequestMember()
	lm.MemberID = m.MemberID
	reason := "devbroker: session timed out"
	lm.Reason = &reason
	req.Members = append(req.Members, lm)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := req.RequestWith(rctx, r.cl)
	if err == nil && resp.ErrorCode != 0 {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err == nil && len(resp.Members) > 0 && resp.Members[0].ErrorCode != 0 {
		err = kerr.ErrorForCode(resp.Members[0].ErrorCode)
	}
	if err != nil {
		r.log.Warn("could not remove a silent group member", "group", group, "member", m.MemberID, "err", err)
		return
	}
	r.log.Warn("removed a group member silent for longer than its session timeout",
		"group", group, "member", m.MemberID, "client", m.ClientID, "host", m.ClientHost, "silent", silent.Round(time.Millisecond))
}
