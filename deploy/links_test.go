package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// Every relative link in the README and docs/ leads somewhere: its file exists,
// and its #anchor is a heading of that file, spelt as GitHub spells it. Sections
// move between these files; a link left pointing at the old place fails here.
func TestEveryRelativeLinkInTheDocsResolves(t *testing.T) {
	pages, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	pages = append([]string{"../README.md"}, pages...)
	checked := 0
	for _, page := range pages {
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range markdownLinks(string(text)) {
			if isExternal(l.target) {
				continue
			}
			checked++
			file, anchor, _ := strings.Cut(l.target, "#")
			dest := page
			if file != "" {
				dest = filepath.Join(filepath.Dir(page), filepath.FromSlash(file))
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s:%d: link to %s: no such file", page, l.line, l.target)
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(dest, ".md") {
				t.Errorf("%s:%d: link to %s: an anchor in a file that is not Markdown", page, l.line, l.target)
				continue
			}
			raw, err := os.ReadFile(dest)
			if err != nil {
				t.Errorf("%s:%d: link to %s: %v", page, l.line, l.target, err)
				continue
			}
			if !headingAnchors(string(raw))[anchor] {
				t.Errorf("%s:%d: link to %s: %s has no heading with the anchor #%s", page, l.line, l.target, dest, anchor)
			}
		}
	}
	// A parser that found nothing would pass every page.
	if checked < 20 {
		t.Errorf("found only %d relative links in %d pages; is the link parser broken?", checked, len(pages))
	}
}

func TestAnchorsAreSpeltAsGitHubSpellsThem(t *testing.T) {
	for heading, want := range map[string]string{
		"Counts (`/getCounts`)": "counts-getcounts",
		"Filters (`q`)":         "filters-q",
		"Mapping policy: no message lost to another's types": "mapping-policy-no-message-lost-to-anothers-types",
		"Health, metrics, logs":                              "health-metrics-logs",
		"Index retention (`ES_RETENTION`)":                   "index-retention-es_retention",
		"Production layout: replicas behind a load balancer": "production-layout-replicas-behind-a-load-balancer",
		"Audit: proving nothing was lost":                    "audit-proving-nothing-was-lost",
		"Try [it](x.md) *now*":                               "try-it-now",
		"Über – größer":                                      "über--größer",
	} {
		if got := slug(heading); got != want {
			t.Errorf("slug(%q) = %q, want %q", heading, got, want)
		}
	}
	got := headingAnchors("# A\n## A\n```\n# not a heading\n```\n### A\n")
	for _, want := range []string{"a", "a-1", "a-2"} {
		if !got[want] {
			t.Errorf("headingAnchors: no #%s among %v", want, got)
		}
	}
	if got["not-a-heading"] {
		t.Errorf("headingAnchors took a line of a code block for a heading")
	}
}

type link struct {
	target string
	line   int
}

var (
	inlineLink  = regexp.MustCompile(`\]\(([^()\s]+)(?:\s+"[^"]*")?\)`)
	codeSpan    = regexp.MustCompile("`[^`]*`")
	linkInTitle = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
)

// markdownLinks lists the inline links of a Markdown text, outside code blocks
// and code spans.
func markdownLinks(text string) []link {
	var links []link
	fenced := false
	for i, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		for _, m := range inlineLink.FindAllStringSubmatch(codeSpan.ReplaceAllString(line, ""), -1) {
			links = append(links, link{target: m[1], line: i + 1})
		}
	}
	return links
}

func isExternal(target string) bool {
	for _, scheme := range []string{"http://", "https://", "mailto:"} {
		if strings.HasPrefix(target, scheme) {
			return true
		}
	}
	return false
}

// headingAnchors gives the anchors GitHub makes for a Markdown text's headings,
// numbering repeats as it does (a, a-1, a-2).
func headingAnchors(text string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	fenced := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimLeft(line, "#")
		if len(line)-len(title) > 6 || !strings.HasPrefix(title, " ") {
			continue
		}
		s := slug(title)
		if n := seen[s]; n > 0 {
			anchors[s+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[s] = true
		}
		seen[s]++
	}
	return anchors
}

// slug is GitHub's anchor for a heading: the text a reader sees, in lower case,
// without punctuation other than - and _, with each space a dash.
func slug(heading string) string {
	heading = linkInTitle.ReplaceAllString(strings.TrimSpace(heading), "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r), unicode.IsNumber(r), r == '_', r == '-':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}
