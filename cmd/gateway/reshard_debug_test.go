package main

import (
	"fmt"
	"time"

	"github.com/shardpool/gateway/internal/discordsim"
	"github.com/shardpool/gateway/service/event"
)

// debugPoints explains a key: each session's hand-over point of its guild.
func debugPoints(ledger []discordsim.SentDispatch, key uint64, at time.Time) string {
	var guild string
	for _, d := range ledger {
		if d.Key == key {
			guild = d.Guild
		}
	}
	out := fmt.Sprintf("key %d guild %s:", key, guild)
	point := map[string]uint64{}
	for _, d := range ledger {
		if d.Guild != guild {
			continue
		}
		if _, found := point[d.SessionID]; !found {
			if c, ok := event.CreatedAt(d.Type, d.Data); ok && !c.Before(at) {
				point[d.SessionID] = d.Key
				out += fmt.Sprintf(" session %s shard %d point key %d seq %d;", d.SessionID[:6], d.Shard, d.Key, d.Seq)
			}
		}
		if d.Key == key {
			out += fmt.Sprintf(" session %s has it at seq %d (%s);", d.SessionID[:6], d.Seq, d.At.Format("15:04:05.000"))
		}
	}
	return out
}
