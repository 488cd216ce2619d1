// Package gen generates the benchmark's load: an open-loop timetable of
// sends, WebSocket clients speaking rooms.v2, and the REST calls that set up
// users and rooms.
package gen

import (
	"context"
	"time"
)

// Timetable is a fixed schedule of Count sends at Rate per second from
// Start. Send i is due at Start + i/Rate whatever happened to the sends
// before it (open loop): latency is measured from that intended time, so a
// stalled server cannot hide its stall by slowing the generator down.
type Timetable struct {
	Start time.Time
	Rate  float64
	Count int
}

// NewTimetable returns the timetable of rate sends per second for d.
func NewTimetable(start time.Time, rate float64, d time.Duration) Timetable {
	n := int(rate * d.Seconds())
	if rate <= 0 || n < 0 {
		n = 0
	}
	return Timetable{Start: start, Rate: rate, Count: n}
}

// At is the intended time of send i.
func (t Timetable) At(i int) time.Time {
	return t.Start.Add(time.Duration(float64(i) * float64(time.Second) / t.Rate))
}

// Assign maps send i to a room and a member of that room: round-robin over
// rooms, and within a room round-robin over its members, so consecutive
// sends of one room come from different members.
func Assign(i, rooms, members int) (room, member int) {
	return i % rooms, (i / rooms) % members
}

// Run calls send for every send of t in order of intended time, spread over
// workers goroutines (send i goes to worker i mod workers), each sleeping
// until its next send is due. lag receives, per send, how late the call
// started against its intended time (the generator's own lag). Run returns
// when every send was made or ctx ends; send and lag must be safe for
// concurrent use by different workers.
func (t Timetable) Run(ctx context.Context, workers int, send func(worker, i int, intended time.Time), lag func(worker int, d time.Duration)) {
	if workers < 1 {
		workers = 1
	}
	done := make(chan struct{})
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			for i := w; i < t.Count; i += workers {
				at := t.At(i)
				if d := time.Until(at); d > 0 {
					timer.Reset(d)
					select {
					case <-ctx.Done():
						return
					case <-timer.C:
					}
				} else if ctx.Err() != nil {
					return
				}
				lag(w, time.Since(at))
				send(w, i, at)
			}
		}()
	}
	for range workers {
		<-done
	}
}
