package testenv

import (
	"reflect"
	"testing"
)

// SameDefaults fails t for each exported field in which fromEnv, an adapter's
// Config loaded from an empty environment, differs from want, its zero Config;
// both with the adapter's withDefaults applied.
//
// Each default lives beside its field, in withDefaults, and the environment
// table in config repeats it for --help and the README: this is what ties the
// two together. Where zero means "none" in code (no bound, no limit, no wait),
// the environment's default is the only one there is; the caller sets it in
// want, naming the variable.
func SameDefaults[T any](t testing.TB, fromEnv, want T) {
	t.Helper()
	g, w := reflect.ValueOf(fromEnv), reflect.ValueOf(want)
	for i := range g.NumField() {
		f := g.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		a, b := g.Field(i).Interface(), w.Field(i).Interface()
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%T.%s: %v from an empty environment, %v beside the field", fromEnv, f.Name, a, b)
		}
	}
}

// EmptyEnv is a getenv of an environment that sets nothing.
func EmptyEnv(string) string { return "" }
