package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Generation is one generation of the fleet's shard plan: the one in force,
// or the next one while the fleet reshards, with its progress.
type Generation struct {
	Generation    int       `json:"generation"`
	State         string    `json:"state"` // in_force or next
	TotalShards   int       `json:"total_shards"`
	ShardsPerPool int       `json:"shards_per_pool"`
	Pools         int       `json:"pools"`
	PoolsClaimed  int       `json:"pools_claimed"`
	ShardsReady   int       `json:"shards_ready"`
	CreatedAt     time.Time `json:"created_at"`
}

// Reshard asks the gateway instance at baseURL (http://host:port) to
// reshard the fleet to total shards (perPool shards per pool, 0 for
// unchanged), with the instance's DRAIN_TOKEN. It returns the fleet's plan
// with both generations. A resharding in progress, or the plan in force,
// is refused (HTTP 409).
func Reshard(ctx context.Context, hc *http.Client, baseURL, token string, total, perPool int) (Plan, error) {
	body, _ := json.Marshal(map[string]int{"total_shards": total, "shards_per_pool": perPool})
	return reshardCall(ctx, hc, http.MethodPost, baseURL, token, body)
}

// AbortReshard asks the instance at baseURL to drop the next generation
// before its cut-over: its sessions close, the plan in force never stopped.
func AbortReshard(ctx context.Context, hc *http.Client, baseURL, token string) (Plan, error) {
	return reshardCall(ctx, hc, http.MethodDelete, baseURL, token, nil)
}

func reshardCall(ctx context.Context, hc *http.Client, method, baseURL, token string, body []byte) (Plan, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(baseURL, "/")+"/reshard", bytes.NewReader(body))
	if err != nil {
		return Plan{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Plan{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return Plan{}, fmt.Errorf("%s /reshard: %s: %s", method, resp.Status, e.Error)
	}
	var p Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return Plan{}, fmt.Errorf("reshard answer %q: %w", b, err)
	}
	return p, nil
}
