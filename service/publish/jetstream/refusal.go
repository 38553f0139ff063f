package jetstream

import "github.com/shardpool/gateway/service/publish"

// JetStream API error codes (err_code) a publish can be answered with, as
// nats-server defines them (server/errors.json). Only those that refuse the
// message itself are listed: sending the same message again gets the same
// answer, so the publish path must not retry it as it is.
//
// Everything else is retried, behind the breaker and with a pause, because
// it is about the broker or the stream and not the message, and passes:
// JetStream or the stream unavailable, no leader, an election (10008,
// 10009, 10118, 10194, 503 no responders), storage or memory or the
// account's limits exhausted (10023, 10028, 10047, 10002; "storage full"),
// a stream full under discard new (10077 "maximum messages/bytes exceeded"),
// a sealed stream (10109), a duplicate still in process (10158), too many
// requests (10167), JetStream not enabled (10076, 10039), and any code this
// table does not know. Refusing those as poison would drop every event.
var messageRefusals = map[int]string{
	// Too large: for the stream's max_msg_size or the server's max_payload
	// (10054), or the header for JetStream's 64 KiB header limit (10097).
	10054: publish.ReasonTooLarge, // JSStreamMessageExceedsMaximumErr
	10097: publish.ReasonTooLarge, // JSStreamHeaderExceedsMaximumErr

	// Headers the stream does not accept or whose condition fails. The
	// gateway sends none of them (only Nats-Msg-Id), so these mean a
	// message that can never be stored as it is.
	10060: publish.ReasonRefused, // JSStreamNotMatchErr: Nats-Expected-Stream
	10070: publish.ReasonRefused, // JSStreamWrongLastMsgIDErrF
	10071: publish.ReasonRefused, // JSStreamWrongLastSequenceErrF
	10164: publish.ReasonRefused, // JSStreamWrongLastSequenceConstantErr
	10193: publish.ReasonRefused, // JSStreamExpectedLastSeqPerSubjectInvalid
	10180: publish.ReasonRefused, // JSStreamMinLastSeqErr
	10111: publish.ReasonRefused, // JSStreamRollupFailedF: Nats-Rollup
	10165: publish.ReasonRefused, // JSMessageTTLInvalidErr: Nats-TTL
	10166: publish.ReasonRefused, // JSMessageTTLDisabledErr
	10168: publish.ReasonRefused, // JSMessageIncrDisabledErr: counters
	10169: publish.ReasonRefused, // JSMessageIncrMissingErr
	10170: publish.ReasonRefused, // JSMessageIncrPayloadErr
	10171: publish.ReasonRefused, // JSMessageIncrInvalidErr
	10172: publish.ReasonRefused, // JSMessageCounterBrokenErr
	10174: publish.ReasonRefused, // JSAtomicPublishDisabledErr: batches
	10175: publish.ReasonRefused, // JSAtomicPublishMissingSeqErr
	10176: publish.ReasonRefused, // JSAtomicPublishIncompleteBatchErr
	10177: publish.ReasonRefused, // JSAtomicPublishUnsupportedHeaderBatchErr
	10179: publish.ReasonRefused, // JSAtomicPublishInvalidBatchIDErr
	10199: publish.ReasonRefused, // JSAtomicPublishTooLargeBatchErrF
	10200: publish.ReasonRefused, // JSAtomicPublishInvalidBatchCommitErr
	10201: publish.ReasonRefused, // JSAtomicPublishContainsDuplicateMessageErr
	10205: publish.ReasonRefused, // JSBatchPublishDisabledErr
	10206: publish.ReasonRefused, // JSBatchPublishInvalidPatternErr
	10207: publish.ReasonRefused, // JSBatchPublishInvalidBatchIDErr
	10208: publish.ReasonRefused, // JSBatchPublishUnknownBatchIDErr
	10188: publish.ReasonRefused, // JSMessageSchedulesDisabledErr: schedules
	10189: publish.ReasonRefused, // JSMessageSchedulesPatternInvalidErr
	10190: publish.ReasonRefused, // JSMessageSchedulesTargetInvalidErr
	10191: publish.ReasonRefused, // JSMessageSchedulesTTLInvalidErr
	10192: publish.ReasonRefused, // JSMessageSchedulesRollupInvalidErr
	10203: publish.ReasonRefused, // JSMessageSchedulesSourceInvalidErr
	10212: publish.ReasonRefused, // JSMessageSchedulesSchedulerInvalidErr
	10223: publish.ReasonRefused, // JSMessageSchedulesTimeZoneInvalidErr
	10227: publish.ReasonRefused, // JSMessageSourceHdrNotAllowedErr
}

// errCodeStoreFailed (JSStreamStoreFailedF) wraps the store's own error, so
// only its description tells a message the file store cannot hold ("message
// too large") from a full stream or a closed store, which pass.
const (
	errCodeStoreFailed   = 10077
	storeMsgTooLargeDesc = "message too large"
)

// refusalReason returns the reason label of a publish refused for the
// message itself, and false for a refusal that a retry may get past.
func refusalReason(errCode int, description string) (string, bool) {
	if errCode == errCodeStoreFailed {
		return publish.ReasonTooLarge, description == storeMsgTooLargeDesc
	}
	reason, ok := messageRefusals[errCode]
	return reason, ok
}
