package deploy

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/annotated-data/pipeline/internal/essecurity"
	"github.com/annotated-data/pipeline/internal/store"
)

// The privileges each binary checks at start, the roles the security file grants
// its user, and the table operators read are one set: a privilege added to the
// code but not to the file would stop the binary at its first secured start, and
// one granted but never used is more than least privilege.
func TestEachUserOfTheSecurityFileHoldsExactlyWhatItsBinaryNeeds(t *testing.T) {
	f, err := essecurity.Load("elasticsearch-security.json", "annotations")
	if err != nil {
		t.Fatal(err)
	}
	for user, access := range map[string]store.Access{
		"webserver": store.Webserver(true, true),
		"backend":   store.Backend(),
		"operator":  store.Operator(true),
	} {
		cluster, index, ok := f.Privileges(user)
		if !ok {
			t.Errorf("the file declares no user %s", user)
			continue
		}
		if want := access.ClusterPrivileges(); !slices.Equal(cluster, want) {
			t.Errorf("user %s: the file grants cluster privileges %v, the binary needs %v", user, cluster, want)
		}
		if want := access.IndexPrivileges(); !slices.Equal(index, want) {
			t.Errorf("user %s: the file grants index privileges %v, the binary needs %v", user, index, want)
		}
		if roles := f.Users[user].Roles; !slices.Equal(roles, access.Roles) {
			t.Errorf("user %s holds roles %v in the file; the binary's messages name %v", user, roles, access.Roles)
		}
	}
}

func TestTheRoleTableOfTheDocsIsTheSecurityFile(t *testing.T) {
	f, err := essecurity.Load("elasticsearch-security.json", "annotations")
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile("../docs/operating.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^ *\\| `(annotations_[a-z]+)` \\|[^|]*\\|([^|]*)\\|([^|]*)\\|$")
	privilege := regexp.MustCompile("`([a-z_]+)`")
	listed := func(cell string) []string {
		var out []string
		for _, m := range privilege.FindAllStringSubmatch(cell, -1) {
			out = append(out, m[1])
		}
		slices.Sort(out)
		return out
	}
	seen := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(text), -1) {
		name := m[1]
		seen[name] = true
		role, ok := f.Roles[name]
		if !ok {
			t.Errorf("docs/operating.md lists role %s, which the file does not declare", name)
			continue
		}
		var index []string
		for _, ip := range role.Indices {
			index = append(index, ip.Privileges...)
		}
		slices.Sort(index)
		cluster := slices.Sorted(slices.Values(role.Cluster))
		if got := listed(m[2]); !slices.Equal(got, cluster) {
			t.Errorf("docs/operating.md gives %s the cluster privileges %v, the file %v", name, got, cluster)
		}
		if got := listed(m[3]); !slices.Equal(got, index) {
			t.Errorf("docs/operating.md gives %s the index privileges %v, the file %v", name, got, index)
		}
	}
	for name := range f.Roles {
		if !seen[name] {
			t.Errorf("role %s of the file is missing from the table in docs/operating.md", name)
		}
	}
	if !strings.Contains(string(text), "deploy/elasticsearch-security.json") {
		t.Error("docs/operating.md does not point at deploy/elasticsearch-security.json")
	}
}
