package testenv

import (
	"fmt"
	"reflect"
)

// DifferentFields names the exported fields of two values of one struct type
// that differ, with both values: "Stream: ANNOTATIONS != CAMS". It is for tests
// that compare configurations, where a whole %+v of each would bury the one field
// that matters.
func DifferentFields[T any](got, want T) []string {
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	var out []string
	for i := range g.NumField() {
		f := g.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		a, b := g.Field(i).Interface(), w.Field(i).Interface()
		if !reflect.DeepEqual(a, b) {
			out = append(out, fmt.Sprintf("%s: %v != %v", f.Name, a, b))
		}
	}
	return out
}
