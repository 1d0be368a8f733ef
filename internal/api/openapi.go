package api

import (
	_ "embed"
	"net/http"
)

// openAPIDocument describes every route, parameter and error of NewServer. It is
// kept by hand beside the code; the tests validate real responses against it.
//
//go:embed openapi.json
var openAPIDocument []byte

func openAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPIDocument)
}
