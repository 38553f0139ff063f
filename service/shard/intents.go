package shard

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/diamondburned/arikawa/v3/gateway"
)

// intentBits are Discord's gateway intents by their documented names
// (https://discord.com/developers/docs/events/gateway#list-of-intents), with
// the older names Discord still lists as aliases.
var intentBits = map[string]uint{
	"GUILDS":                        0,
	"GUILD_MEMBERS":                 1,
	"GUILD_MODERATION":              2,
	"GUILD_BANS":                    2,
	"GUILD_EXPRESSIONS":             3,
	"GUILD_EMOJIS_AND_STICKERS":     3,
	"GUILD_INTEGRATIONS":            4,
	"GUILD_WEBHOOKS":                5,
	"GUILD_INVITES":                 6,
	"GUILD_VOICE_STATES":            7,
	"GUILD_PRESENCES":               8,
	"GUILD_MESSAGES":                9,
	"GUILD_MESSAGE_REACTIONS":       10,
	"GUILD_MESSAGE_TYPING":          11,
	"DIRECT_MESSAGES":               12,
	"DIRECT_MESSAGE_REACTIONS":      13,
	"DIRECT_MESSAGE_TYPING":         14,
	"MESSAGE_CONTENT":               15,
	"GUILD_SCHEDULED_EVENTS":        16,
	"AUTO_MODERATION_CONFIGURATION": 20,
	"AUTO_MODERATION_EXECUTION":     21,
	"GUILD_MESSAGE_POLLS":           24,
	"DIRECT_MESSAGE_POLLS":          25,
}

// intentMask has every bit Discord defines; another bit closes IDENTIFY
// with 4013.
var intentMask = func() gateway.Intents {
	var m gateway.Intents
	for _, b := range intentBits {
		m |= 1 << b
	}
	return m
}()

// ParseIntents reads GATEWAY_INTENTS: a comma list of intent names
// (GUILDS,GUILD_MEMBERS,GUILD_VOICE_STATES) or an integer bit field.
func ParseIntents(v string) (gateway.Intents, error) {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		if gateway.Intents(n)&^intentMask != 0 {
			return 0, fmt.Errorf("%s has bits Discord defines no intent for", v)
		}
		return gateway.Intents(n), nil
	}
	var in gateway.Intents
	for _, name := range strings.Split(v, ",") {
		name = strings.ToUpper(strings.TrimSpace(name))
		if name == "" {
			continue
		}
		bit, ok := intentBits[name]
		if !ok {
			return 0, fmt.Errorf("%q is not a gateway intent (see https://discord.com/developers/docs/events/gateway#list-of-intents)", name)
		}
		in |= 1 << bit
	}
	if in == 0 {
		return 0, fmt.Errorf("%q names no intent", v)
	}
	return in, nil
}
