package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestReshardPostsTheTotalWithTheTokenAndPrintsBothGenerations(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization")+" "+string(b))
		if r.Method == http.MethodDelete {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"no resharding in progress"}`))
			return
		}
		w.Write([]byte(`{"total_shards":4,"shards_per_pool":2,"pools":2,"generations":[
			{"generation":1,"state":"in_force","total_shards":4,"shards_per_pool":2,"pools":2,"pools_claimed":2,"shards_ready":4},
			{"generation":2,"state":"next","total_shards":8,"shards_per_pool":2,"pools":4,"pools_claimed":1,"shards_ready":0}]}`))
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	if code := run([]string{"reshard", "-url", srv.URL, "-token", "tok", "-total", "8"}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if len(got) != 1 || got[0] != `POST /reshard Bearer tok {"shards_per_pool":0,"total_shards":8}` {
		t.Fatalf("requests %q", got)
	}
	for _, want := range []string{"generation 1 in_force: total_shards=4", "pools claimed 2/2, shards READY 4/4", "generation 2 next: total_shards=8", "pools claimed 1/4, shards READY 0/8"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"reshard", "-url", srv.URL, "-abort"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "no resharding in progress") {
		t.Fatalf("abort without one: exit %d: %s", code, errOut.String())
	}
	for _, args := range [][]string{{"reshard"}, {"reshard", "-abort", "-total", "8"}, {"reshard", "-total", "0"}} {
		if code := run(args, &out, &errOut); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
