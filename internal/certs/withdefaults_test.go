package certs

// WithDefaults lets the external tests compare the defaults beside the fields
// with what an empty environment configures (defaults_test.go).
var WithDefaults = Config.withDefaults
