package store

// WithDefaults lets defaults_test.go compare the defaults beside the fields with
// what an empty environment configures (testenv.SameDefaults).
var WithDefaults = Config.withDefaults
