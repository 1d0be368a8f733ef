package store

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
)

// Need is one privilege a binary's Elasticsearch user must hold, in the terms of
// Elasticsearch's role API, and what the binary does with it.
type Need struct {
	Privilege string
	// Index: an index privilege on <ES_INDEX_PREFIX>-*; otherwise a cluster one.
	Index bool
	For   string
}

// The privileges the binaries use, each named once. deploy/elasticsearch-security.json
// grants exactly these (a test holds the two together), and the security tests
// prove against a real secured node that each one is needed where it is listed.
var (
	needMonitor   = Need{Privilege: "monitor", For: "cluster health, at start and for /readyz"}
	needTemplates = Need{Privilege: "manage_index_templates", For: "installing the index template"}
	needSecurity  = Need{Privilege: "manage_security", For: "creating roles, users and API keys"}
	needCreateDoc = Need{Privilege: "create_doc", Index: true, For: "indexing documents"}
	needCreateIdx = Need{Privilege: "create_index", Index: true, For: "creating each day's (or month's) index"}
	needRead      = Need{Privilege: "read", Index: true, For: "searching (exports, points in time, counts, audits)"}
	needRefresh   = Need{Privilege: "maintenance", Index: true, For: "follow's refresh before each step"}
	needDelete    = Need{Privilege: "delete_index", Index: true, For: "ES_RETENTION deleting aged indices"}
	needListIdx   = Need{Privilege: "monitor", Index: true, For: "ES_RETENTION listing the indices"}
)

// Access is what a binary does with Elasticsearch: the privileges its user needs,
// and the role of deploy/elasticsearch-security.json that grants them, which
// messages name as the place to fix a missing one.
type Access struct {
	Roles []string
	Needs []Need
}

// Webserver is the ingester's access; auditing (AUDIT_INTERVAL) reads what it
// indexed, and retention (ES_RETENTION) lists and deletes indices.
func Webserver(audit, retention bool) Access {
	a := Access{Roles: []string{"annotations_writer"}, Needs: []Need{needMonitor, needTemplates, needCreateDoc, needCreateIdx}}
	if audit {
		a.Needs = append(a.Needs, needRead)
	}
	if retention {
		a.Roles = append(a.Roles, "annotations_retention")
		a.Needs = append(a.Needs, needListIdx, needDelete)
	}
	return a
}

// Backend is the API's access: it searches, and follow refreshes.
func Backend() Access {
	return Access{Roles: []string{"annotations_reader"}, Needs: []Need{needMonitor, needRead, needRefresh}}
}

// Operator is the access of `webserver audit` (read only) and of `audit --repair`
// and `replay`, which index what is missing as the webserver would.
func Operator(writes bool) Access {
	a := Access{Roles: []string{"annotations_operator"}, Needs: []Need{needMonitor, needRead}}
	if writes {
		a.Needs = append(a.Needs, needTemplates, needCreateDoc, needCreateIdx)
	}
	return a
}

// SecurityAdmin is the access of `webserver setup-security`, which no role of the
// file grants: it is the cluster's superuser's.
func SecurityAdmin() Access {
	return Access{Needs: []Need{needMonitor, needSecurity}}
}

// ClusterPrivileges and IndexPrivileges list a's privileges by kind, sorted and
// without repeats.
func (a Access) ClusterPrivileges() []string { return a.privileges(false) }

// IndexPrivileges: see ClusterPrivileges.
func (a Access) IndexPrivileges() []string { return a.privileges(true) }

func (a Access) privileges(index bool) []string {
	var out []string
	for _, n := range a.Needs {
		if n.Index == index {
			out = append(out, n.Privilege)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// describe lists needs in a sentence: "the cluster privilege monitor (cluster
// health) and the index privilege read on annotations-* (searching)".
func describe(needs []Need, pattern string) string {
	parts := make([]string, len(needs))
	for i, n := range needs {
		if n.Index {
			parts[i] = fmt.Sprintf("the index privilege %s on %s (%s)", n.Privilege, pattern, n.For)
		} else {
			parts[i] = fmt.Sprintf("the cluster privilege %s (%s)", n.Privilege, n.For)
		}
	}
	switch len(parts) {
	case 0:
		return "nothing"
	case 1:
		return parts[0]
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " and " + parts[len(parts)-1]
}

// MissingPrivilegesError is a user or API key that Elasticsearch's security does
// not allow everything the binary does.
type MissingPrivilegesError struct {
	Who, Where, Pattern string
	Access              Access
	Missing             []Need
}

func (e *MissingPrivilegesError) Error() string {
	fix := "a role that has them (the built-in superuser elastic has all)"
	if len(e.Access.Roles) > 0 {
		fix = "the role " + strings.Join(e.Access.Roles, " and ") + " of deploy/elasticsearch-security.json"
	}
	return fmt.Sprintf("elasticsearch at %s does not grant %s %s: give it %s, "+
		"or set ELASTICSEARCH_USERNAME (or ELASTICSEARCH_API_KEY) to one that has them",
		e.Where, e.Who, describe(e.Missing, e.Pattern), fix)
}

// missingPrivileges asks Elasticsearch which of access's privileges the
// authenticated user or key lacks. It answers nil, nil where it cannot tell: a
// cluster without security has no _has_privileges API, and grants everything.
func missingPrivileges(ctx context.Context, es *elasticsearch.Client, pattern string, access Access) ([]Need, error) {
	body, err := json.Marshal(map[string]any{
		"cluster": access.ClusterPrivileges(),
		"index":   []map[string]any{{"names": []string{pattern}, "privileges": access.IndexPrivileges()}},
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := es.Security.HasPrivileges(strings.NewReader(string(body)), es.Security.HasPrivileges.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("check privileges: %w", err)
	}
	defer drain(res)
	if res.StatusCode != http.StatusOK {
		return nil, nil
	}
	var answer struct {
		Cluster map[string]bool            `json:"cluster"`
		Index   map[string]map[string]bool `json:"index"`
	}
	if err := json.NewDecoder(res.Body).Decode(&answer); err != nil {
		return nil, fmt.Errorf("decode privileges: %w", err)
	}
	var missing []Need
	for _, n := range access.Needs {
		granted := answer.Cluster[n.Privilege]
		if n.Index {
			granted = answer.Index[pattern][n.Privilege]
		}
		if !granted {
			missing = append(missing, n)
		}
	}
	return missing, nil
}
