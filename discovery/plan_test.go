package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestAgreePlanStoresTheFirstInstancesPlanAndTheOthersAdoptIt(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	ctx := ctxTimeout(t, 30*time.Second)
	first, next := newInstance(t, a, p, 10*time.Second), newInstance(t, a, p, 10*time.Second)

	got, err := first.AgreePlan(ctx, Plan{TotalShards: 4, ShardsPerPool: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got.TotalShards != 4 || got.ShardsPerPool != 2 || got.Generation != FirstGeneration || got.CreatedAt.IsZero() || got.CreatedBy != first.cfg.InstanceID {
		t.Fatalf("stored %+v", got)
	}
	adopted, err := next.AgreePlan(ctx, Plan{TotalShards: 8, ShardsPerPool: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !adopted.Same(got) || !adopted.CreatedAt.Equal(got.CreatedAt) {
		t.Fatalf("the second instance got %+v, want the stored %+v", adopted, got)
	}
	// Operators read it as JSON at <KV_PREFIX>/plan.
	kv, _, err := first.client.KV().Get(p+"/plan", nil)
	if err != nil || kv == nil {
		t.Fatalf("plan key: %v %v", kv, err)
	}
	var fields map[string]any
	if err := json.Unmarshal(kv.Value, &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"total_shards", "shards_per_pool", "generation", "created_at"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("stored plan %s lacks %s", kv.Value, k)
		}
	}
}

func TestAgreePlanOfInstancesStartingTogetherStoresExactlyOnePlan(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	ctx := ctxTimeout(t, 30*time.Second)
	const n = 6
	got := make([]Plan, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		in := newInstance(t, a, p, 10*time.Second)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var err error
			// Each would resolve auto differently.
			if got[i], err = in.AgreePlan(ctx, Plan{TotalShards: 10 + i, ShardsPerPool: 5}); err != nil {
				t.Error(err)
			}
		}()
	}
	close(start)
	wg.Wait()
	for i := range got {
		if !got[i].Same(got[0]) || !got[i].CreatedAt.Equal(got[0].CreatedAt) {
			t.Fatalf("instance %d agreed on %+v, instance 0 on %+v", i, got[i], got[0])
		}
	}
}

func TestAgreePlanRefusesAMalformedStoredPlan(t *testing.T) {
	a := sharedAgent(t)
	p := prefix(t)
	in := newInstance(t, a, p, 10*time.Second)
	if _, err := in.client.KV().Put(&api.KVPair{Key: p + "/plan", Value: []byte(`{"total_shards":0}`)}, nil); err != nil {
		t.Fatal(err)
	}
	_, err := in.AgreePlan(context.Background(), Plan{TotalShards: 4, ShardsPerPool: 2})
	if err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("AgreePlan = %v, want an error about the malformed plan", err)
	}
}

func TestCheckPlanNamesEveryMismatchingVariableWithBothValues(t *testing.T) {
	stored := Plan{TotalShards: 8, ShardsPerPool: 4, Generation: 1}
	cases := []struct {
		name                string
		total, perPool, gen int
		want                []string // the error's mismatches, in order
	}{
		{"the same", 8, 4, 1, nil},
		{"auto adopts the stored total", 0, 4, 0, nil},
		{"another total", 6, 4, 0, []string{"TOTAL_SHARDS=6 differs from the fleet's shard plan (gw/plan: 8)"}},
		{"another pool size", 0, 2, 0, []string{"SHARDS_PER_POOL=2 differs from the fleet's shard plan (gw/plan: 4)"}},
		{"both", 16, 2, 0, []string{"TOTAL_SHARDS=16 differs", "SHARDS_PER_POOL=2 differs"}},
		{"another generation", 8, 4, 2, []string{"plan generation=2 differs from the fleet's shard plan (gw/plan: 1)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPlan("gw/plan", stored, tc.total, tc.perPool, tc.gen)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var mismatch *PlanMismatchError
			if !errors.As(err, &mismatch) || len(mismatch.Mismatches) != len(tc.want) {
				t.Fatalf("CheckPlan = %v, want %d mismatches", err, len(tc.want))
			}
			rest := err.Error()
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error %q lacks %q (in order)", err, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}
