package pipeline

// SeqBucket is what the store holds of one range of stream sequences: how many
// documents, and how many distinct sequences among them.
type SeqBucket struct {
	From, To  uint64 // both included
	Documents int64
	// Sequences is the number of distinct sequences, which may be counted short
	// (never long) by a hash collision; Documents is exact.
	Sequences int64
}

// Copy is one stored document of a message: where it is.
type Copy struct {
	Index, ID string
	Seq       uint64
}
