package shard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/diamondburned/arikawa/v3/api"
	"github.com/diamondburned/arikawa/v3/utils/httputil"
)

// GatewayBot is Discord's answer to GET /gateway/bot.
type GatewayBot = api.BotData

// FetchGatewayBot asks Discord's REST API (apiURL, e.g.
// https://discord.com/api/v10) for the gateway URL, the recommended shard
// count and the session start limit. The token is sent, never reported.
func FetchGatewayBot(ctx context.Context, apiURL, token string) (*GatewayBot, error) {
	client := api.NewClient("Bot " + token)
	client.Client.Retries = 3
	var bd *api.BotData
	err := client.WithContext(ctx).RequestJSON(&bd, "GET", apiURL+"/gateway/bot")
	if err != nil {
		var herr *httputil.HTTPError
		if errors.As(err, &herr) && herr.Status == 401 {
			return nil, errors.New("GET /gateway/bot: 401 unauthorized: check DISCORD_TOKEN")
		}
		return nil, fmt.Errorf("GET /gateway/bot: %w", err)
	}
	if bd == nil || bd.URL == "" {
		return nil, errors.New("GET /gateway/bot: response has no gateway url")
	}
	if bd.StartLimit == nil {
		return nil, errors.New("GET /gateway/bot: response has no session_start_limit")
	}
	return bd, nil
}

// StartLimitOf is bot's session_start_limit as a StartLimit, for a response
// received at at: the window ends reset_after later.
func StartLimitOf(bot *GatewayBot, at time.Time) StartLimit {
	l := bot.StartLimit
	return StartLimit{Total: l.Total, Remaining: l.Remaining, ResetAt: at.Add(l.ResetAfter.Duration())}
}

// StartLimitReader returns the SessionStartsConfig.Fetch that reads
// /gateway/bot from apiURL with token.
func StartLimitReader(apiURL, token string) func(context.Context) (StartLimit, error) {
	return func(ctx context.Context) (StartLimit, error) {
		bot, err := FetchGatewayBot(ctx, apiURL, token)
		if err != nil {
			return StartLimit{}, err
		}
		return StartLimitOf(bot, time.Now()), nil
	}
}
