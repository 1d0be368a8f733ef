package pipeline

// Reason names why a message can never be indexed; it travels with the message to
// the dead-letter stream (the Dlq-Reason header) and labels the dead-letter metric.
// Besides these, a document the store refuses carries the store's own error type
// (mapper_parsing_exception, …) as its reason.
type Reason string

// Reasons a message is dead-lettered before it reaches the store.
const (
	ReasonInvalidJSON Reason = "invalid_json"
	ReasonNotObject   Reason = "not_an_object"
	ReasonReserved    Reason = "reserved_field"
	ReasonNoTimestamp Reason = "missing_timestamp"
	// ReasonTimestampOutOfRange is an event time outside the accepted window
	// around the publish time, or outside the years 0000-9999.
	ReasonTimestampOutOfRange Reason = "timestamp_out_of_range"
	ReasonBadMsgID            Reason = "invalid_msg_id"
	ReasonTooLarge            Reason = "too_large"
	ReasonMaxDeliveries       Reason = "max_deliveries"
	// ReasonInvalidMessage covers a message whose JetStream metadata cannot be read.
	ReasonInvalidMessage Reason = "invalid_message"
)

// Reasons are the reasons of this package, the ones known before the store
// answers: the dead-letter metric starts each at 0, so that the first dead letter
// of a reason is an increase an alert can see. The store's error types are open
// ended and are not among them.
func Reasons() []Reason {
	return []Reason{ReasonInvalidJSON, ReasonNotObject, ReasonReserved, ReasonNoTimestamp,
		ReasonTimestampOutOfRange, ReasonBadMsgID, ReasonTooLarge, ReasonMaxDeliveries, ReasonInvalidMessage}
}

// RejectError is a permanent problem with a message: retrying cannot help, so the
// message goes to the dead-letter stream with Reason and Detail.
type RejectError struct {
	Reason Reason
	Detail string
}

func (e *RejectError) Error() string { return string(e.Reason) + ": " + e.Detail }
