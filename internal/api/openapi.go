package api

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
)

// openAPIDocument describes every route, parameter and error of NewServer. It is
// kept by hand beside the code; the tests validate real responses against it.
//
//go:embed openapi.json
var openAPIDocument []byte

// openAPI serves the description. With API keys configured, anonymous access (the
// empty security requirement) is struck from the operations that need a key, so
// that the served description says what this server does.
func openAPI(keyed bool) (http.HandlerFunc, error) {
	doc := openAPIDocument
	if keyed {
		var err error
		if doc, err = withoutAnonymousAccess(openAPIDocument); err != nil {
			return nil, fmt.Errorf("openapi.json: %w", err)
		}
	}
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
	}, nil
}

func withoutAnonymousAccess(doc []byte) ([]byte, error) {
	var d map[string]any
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, err
	}
	paths, _ := d["paths"].(map[string]any)
	for _, p := range paths {
		ops, _ := p.(map[string]any)
		for _, o := range ops {
			op, _ := o.(map[string]any)
			reqs, _ := op["security"].([]any)
			if len(reqs) < 2 {
				continue // open to all (a probe), or one scheme only
			}
			kept := []any{}
			for _, r := range reqs {
				if m, _ := r.(map[string]any); len(m) > 0 {
					kept = append(kept, r)
				}
			}
			op["security"] = kept
		}
	}
	return json.MarshalIndent(d, "", "  ")
}
