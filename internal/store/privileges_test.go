//go:build integration

package store_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/annotated-data/pipeline/internal/essecurity"
	"github.com/annotated-data/pipeline/internal/pipeline"
	"github.com/annotated-data/pipeline/internal/store"
	"github.com/annotated-data/pipeline/internal/testenv"
)

// operation is what the store does with one privilege: it succeeds with the
// privilege and gets 403 without it.
type operation func(ctx context.Context, st *store.Store) error

// Least privilege, proven against Elasticsearch's own security: every user of
// deploy/elasticsearch-security.json can do everything its binary does with its
// roles, and loses exactly the operation a privilege is for when that one
// privilege is taken away; a step outside its job is refused.
func TestEachPrivilegeOfTheSecurityFileIsNeededForWhatItIsFor(t *testing.T) {
	secured := testenv.SecuredElasticsearch(t)
	prefix := testenv.IndexPrefix(t, secured.AdminURL)
	file, err := essecurity.Load("../../deploy/elasticsearch-security.json", prefix)
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2023, 3, 9, 0, 0, 0, 0, time.UTC)
	// An index with a document, for the operations that read, refresh and list;
	// the ones that create or delete an index make their own.
	testenv.IndexDocuments(t, secured.AdminURL, prefix, 1, func(int) pipeline.Item {
		return pipeline.Item{ID: "seed", Timestamp: day, Body: testenv.DocumentBody("seed", day, "cam-1")}
	})
	admin := open(t, secured.AdminURL, prefix)
	var mu sync.Mutex // the users' subtests run side by side
	next := day
	freshDay := func() time.Time { mu.Lock(); defer mu.Unlock(); next = next.AddDate(0, 0, 1); return next }

	docs := 0
	doc := func(at time.Time) []pipeline.Item {
		mu.Lock()
		docs++
		id := fmt.Sprintf("d-%d", docs)
		mu.Unlock()
		return []pipeline.Item{{ID: id, Timestamp: at, Body: testenv.DocumentBody(id, at, "cam-1")}}
	}
	bulk := func(ctx context.Context, st *store.Store, items []pipeline.Item) error {
		results, err := st.Bulk(ctx, items)
		if err != nil {
			return err
		}
		for _, r := range results {
			if r.Status >= 300 {
				return fmt.Errorf("bulk item: %d %s: %s", r.Status, r.Type, r.Reason)
			}
		}
		return nil
	}
	ops := map[string]operation{
		"cluster monitor": func(ctx context.Context, st *store.Store) error { _, err := st.Health(ctx); return err },
		"cluster manage_index_templates": func(ctx context.Context, st *store.Store) error {
			return st.EnsureTemplate(ctx, store.TemplateSettings{Shards: 1, RefreshInterval: "1s", IgnoreAbove: 256})
		},
		"index create_doc": func(ctx context.Context, st *store.Store) error { return bulk(ctx, st, doc(day)) },
		"index create_index": func(ctx context.Context, st *store.Store) error {
			return bulk(ctx, st, doc(freshDay()))
		},
		"index read": func(ctx context.Context, st *store.Store) error {
			return st.Export(ctx, pipeline.Range{From: day, To: day.AddDate(0, 0, 1), PageSize: 10}, func(pipeline.Page) error { return nil })
		},
		"index maintenance": func(ctx context.Context, st *store.Store) error { return st.Refresh(ctx) },
		"index monitor":     func(ctx context.Context, st *store.Store) error { _, err := st.Indices(ctx); return err },
		"index delete_index": func(ctx context.Context, st *store.Store) error {
			at := freshDay()
			if err := bulk(context.Background(), admin, doc(at)); err != nil {
				return fmt.Errorf("as elastic: %w", err)
			}
			return st.DeleteIndex(ctx, st.IndexName(at))
		},
	}
	// Steps just outside each user's job.
	outside := map[string][]string{
		"webserver": {"index maintenance"},
		"backend":   {"index create_doc", "index delete_index", "cluster manage_index_templates"},
		"operator":  {"index delete_index", "index maintenance"},
	}

	ca, err := os.ReadFile(secured.CACertFile)
	if err != nil {
		t.Fatal(err)
	}
	as := func(t *testing.T, cluster, index []string) *store.Store {
		role := secured.Role(t, essecurity.Role{Cluster: cluster, Indices: []essecurity.IndexPrivileges{{Names: []string{prefix + "-*"}, Privileges: index}}})
		if len(index) == 0 {
			role = secured.Role(t, essecurity.Role{Cluster: cluster})
		}
		user, password := secured.User(t, role)
		st, err := store.New(store.Config{Addresses: []string{secured.URL}, IndexPrefix: prefix, Username: user, Password: password, CACert: ca})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	ctx := context.Background()
	for _, user := range []string{"webserver", "backend", "operator"} {
		cluster, index, ok := file.Privileges(user)
		if !ok {
			t.Fatalf("the file declares no user %s", user)
		}
		t.Run(user, func(t *testing.T) {
			t.Parallel()
			var granted []string
			for _, p := range cluster {
				granted = append(granted, "cluster "+p)
			}
			for _, p := range index {
				granted = append(granted, "index "+p)
			}
			full := as(t, cluster, index)
			for _, p := range granted {
				if err := ops[p](ctx, full); err != nil {
					t.Errorf("with all of its roles, %s (%s) fails: %v", p, user, err)
				}
			}
			for _, p := range granted {
				kind, name, _ := strings.Cut(p, " ")
				without := func(list []string, k string) []string {
					if kind != k {
						return list
					}
					return slices.DeleteFunc(slices.Clone(list), func(s string) bool { return s == name })
				}
				st := as(t, without(cluster, "cluster"), without(index, "index"))
				if err := ops[p](ctx, st); !forbidden(err) {
					t.Errorf("without %s, %s's operation for it: %v; want a 403 from Elasticsearch", p, user, err)
				}
			}
			for _, p := range outside[user] {
				if err := ops[p](ctx, full); !forbidden(err) {
					t.Errorf("%s, outside %s's job: %v; want a 403", p, user, err)
				}
			}
		})
	}
}

// forbidden reports whether err is Elasticsearch refusing for lack of privileges.
func forbidden(err error) bool {
	var re *store.ResponseError
	if errors.As(err, &re) && re.Status == 403 {
		return true
	}
	return err != nil && strings.Contains(err.Error(), "403") && strings.Contains(err.Error(), "security_exception")
}
