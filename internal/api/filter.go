package api

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/annotated-data/pipeline/internal/query"
)

// The headers that tell a client what its q could not show by itself: fields
// no index maps (a condition on one matches nothing, so a misspelt field would
// look like "no data"), and conditions answered less exactly than asked.
const (
	unknownFieldsHeader = "Query-Unknown-Fields"
	warningHeader       = "Query-Warning"
)

// filter is a q, read against the mapping.
type filter struct {
	query query.Query // nil: every document
	notes query.Notes
	caps  query.Caps // of the fields q names, and of those asked for besides
}

// readFilter builds expr's query against the types its fields have in the
// store, and those of also. A q whose conditions cannot hold for their fields'
// types is a 400 (bad is set); a store that cannot answer is err.
func readFilter(ctx context.Context, st Exporter, expr *query.Expr, zone *time.Location, also ...string) (f filter, bad *apiError, err error) {
	fields := append(expr.Fields(), also...)
	if len(fields) == 0 {
		return f, nil, nil
	}
	if f.caps, err = st.FieldCaps(ctx, fields); err != nil {
		return f, nil, err
	}
	if f.query, f.notes, err = expr.Query(f.caps, zone); err != nil {
		return f, queryError(err), nil
	}
	return f, nil, nil
}

// tell puts the notes in the response's headers.
func (f filter) tell(h http.Header) {
	if len(f.notes.Unknown) > 0 {
		h.Set(unknownFieldsHeader, strings.Join(f.notes.Unknown, ", "))
	}
	for _, w := range f.notes.Warnings {
		h.Add(warningHeader, w)
	}
}
