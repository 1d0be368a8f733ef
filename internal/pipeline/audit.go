package pipeline

// SeqRange is a span of stream sequences, both ends included.
type SeqRange struct{ From, To uint64 }

// SeqBucket is what the store holds of one range of stream sequences: how many
// documents, and the sum of their sequences, both exact.
type SeqBucket struct {
	From, To  uint64 // both included
	Documents int64
	SeqSum    uint64
}

// Copy is one stored document of a message: where it is.
type Copy struct {
	Index, ID string
	Seq       uint64
}
