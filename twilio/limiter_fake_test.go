package twilio_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bindsync/bindsync/twilio"
	"github.com/bindsync/bindsync/twilio/twiliotest"
)

// Under an account limit of N requests in flight, a client allowed 4N
// settles at the limit: no request fails, and fewer than 5% of the
// requests meet a 429, with and without the load headers. Counts only: how
// fast it went is for the benchmarks.
func TestLimiterSettlesUnderAccountLimit(t *testing.T) {
	world := twiliotest.NewWorld(twiliotest.WorldSpec{Seed: 5, Services: 1, UsersPerService: 500, MaxBindingsPerUser: 2})
	for _, tt := range []struct {
		limit, reads int
	}{
		{4, 1000},
		{16, 2000},
	} {
		for _, headers := range []bool{true, false} {
			t.Run(fmt.Sprintf("N=%d/headers=%v", tt.limit, headers), func(t *testing.T) {
				t.Parallel()
				srv := twiliotest.NewServer(twiliotest.Options{
					World:         world,
					NoLoadHeaders: !headers,
					Faults:        twiliotest.Faults{Latency: 5 * time.Millisecond, MaxConcurrent: tt.limit},
				})
				defer srv.Close()
				var (
					mu        sync.Mutex
					last      int
					throttled int
				)
				c, err := twilio.New(twilio.Config{
					BaseURL:     srv.URL(),
					Username:    world.AccountSID,
					Password:    twiliotest.DefaultAuthToken,
					MaxInFlight: 4 * tt.limit,
					Hooks: twilio.Hooks{OnLimitChange: func(limit int, reason string) {
						mu.Lock()
						defer mu.Unlock()
						last = limit
						if reason == "throttled" {
							throttled++
						}
					}},
				})
				if err != nil {
					t.Fatal(err)
				}
				svc := world.Services[0]
				var next, failed atomic.Int64
				var wg sync.WaitGroup
				for range 4 * tt.limit {
					wg.Go(func() {
						for {
							i := int(next.Add(1)) - 1
							if i >= tt.reads {
								return
							}
							u := svc.Users[i%len(svc.Users)]
							if _, err := c.ListBindings(context.Background(), twilio.BindingsQuery{ServiceSID: svc.SID, User: u.SID}); err != nil {
								failed.Add(1)
								t.Errorf("read bindings of %s: %v", u.SID, err)
							}
						}
					})
				}
				wg.Wait()

				st := srv.Stats()
				if failed.Load() != 0 {
					t.Errorf("%d of %d reads failed", failed.Load(), tt.reads)
				}
				if st.ByStatus[200] != int64(tt.reads) {
					t.Errorf("server answered %d pages, want %d", st.ByStatus[200], tt.reads)
				}
				if n429 := st.ByStatus[429]; n429*20 >= st.Requests {
					t.Errorf("%d of %d requests met a 429: 5%% or more", n429, st.Requests)
				}
				if st.MaxAdmitted > int64(tt.limit) {
					t.Errorf("fake admitted %d at once, above its limit %d", st.MaxAdmitted, tt.limit)
				}
				mu.Lock()
				defer mu.Unlock()
				if throttled == 0 || last != c.InFlightLimit() {
					t.Errorf("hook: %d decreases, last limit %d, InFlightLimit %d; want decreases and the cap in force", throttled, last, c.InFlightLimit())
				}
				t.Logf("%d requests, %d × 429, cap now %d", st.Requests, st.ByStatus[429], c.InFlightLimit())
			})
		}
	}
}
