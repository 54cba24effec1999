package plugins

import (
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRE2ToPCRE(t *testing.T) {
	cases := []struct {
		re2, pcre string
		groups    int
		err       bool
	}{
		{re2: `^/api/v[0-9]+/.*$`, pcre: `\A\/api\/v(?:[0-9])+\/(?:[^\n])*\z`},
		{re2: `(?i)abc`, pcre: `(?i:ABC)`},
		{re2: `(?s).`, pcre: `(?s:.)`},
		{re2: `(?m)^a$`, pcre: `(?m:^)a(?m:$)`},
		{re2: `\d\s\w`, pcre: `[0-9][\x09-\x0a\x0c-\x0d\x20][0-9A-Z\x5fa-z]`},
		{re2: `a{2,3}?b{2}c{1,}`, pcre: `(?:a){2,3}?(?:b){2}(?:c){1,}`},
		// Groups are numbered, never named: RE2 allows duplicate and non-ASCII names,
		// PCRE does not, and substitutions refer to numbers only.
		{re2: `(a)|(?P<n>b)`, pcre: `(?:(a)|(b))`, groups: 2},
		{re2: `(?P<n>a)(?P<n>b)(?P<名>c)`, pcre: `(a)(b)(c)`, groups: 3},
		{re2: `(a)\C(b)`, pcre: `(a)[\x00-\xff](b)`, groups: 2},
		{re2: `\bx\B`, pcre: `\bx\B`},
		{re2: `é`, pcre: `\xc3\xa9`},
		{re2: `[^/]+`, pcre: `(?:[\x00-\x2e0-\x7f\x80-\xff])+`},
		{re2: `[-\]^]`, pcre: `[\x2d\x5d-\x5e]`},
		{re2: `[é]`, pcre: `\xc3\xa9`},
		{re2: `[é-ü]`, err: true},
		{re2: `(?i)[k-s]`, pcre: `[K-Sk-s]`},
		{re2: `(?i)é`, err: true},
		{re2: `(`, err: true},
	}
	for _, c := range cases {
		got, groups, err := re2ToPCRE(c.re2)
		if (err != nil) != c.err {
			t.Errorf("%q: err = %v, want error %v", c.re2, err, c.err)
			continue
		}
		if err == nil && (got != c.pcre || groups != c.groups) {
			t.Errorf("%q: got %q (%d groups), want %q (%d groups)", c.re2, got, groups, c.pcre, c.groups)
		}
	}
}

func TestAnchoredAtStart(t *testing.T) {
	for re, want := range map[string]bool{
		`^/a`: true, `^a|^b`: true, `(^a)b`: true, `(?:^a)+`: true,
		`a`: false, `^a|b`: false, `(?m)^a`: false, `x*^a`: false,
	} {
		if got := anchoredAtStart(re); got != want {
			t.Errorf("anchoredAtStart(%q) = %v, want %v", re, got, want)
		}
	}
}

func TestRE2SubstToNgx(t *testing.T) {
	for in, want := range map[string]string{
		`\1-\0`: `${1}-${0}`, `$5`: `$$5`, `a\\b`: `a\b`, `plain`: `plain`,
	} {
		got, err := re2SubstToNgx(in, 1)
		if err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`\2`, `\n`, `x\`} {
		if _, err := re2SubstToNgx(bad, 1); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// The converted patterns only use syntax that Go's regexp also reads with the same
// meaning on ASCII text (everything except the (?!) emitted for classes that match
// nothing), so Go can check that a conversion preserves matches and groups.
func checkSameMatches(t *testing.T, re2, subject string) {
	pcre, _, err := re2ToPCRE(re2)
	if err != nil || strings.Contains(pcre, "(?!)") {
		return
	}
	orig, err := regexp.Compile(re2)
	if err != nil {
		t.Fatalf("re2ToPCRE accepted %q which Go rejects: %v", re2, err)
	}
	conv, err := regexp.Compile(pcre)
	if err != nil {
		t.Fatalf("%q converted to %q, which does not compile: %v", re2, pcre, err)
	}
	if d := cmp.Diff(orig.FindAllStringSubmatchIndex(subject, -1), conv.FindAllStringSubmatchIndex(subject, -1)); d != "" {
		t.Errorf("%q -> %q on %q (-re2 +pcre):\n%s", re2, pcre, subject, d)
	}
}

func TestRE2ToPCREPreservesMatches(t *testing.T) {
	for _, re := range []string{`^/api/v[0-9]+/(.*)$`, `(?i)Ab+c`, `a|b|`, `(a*)(b?)\b`, `[^/]+/`, `x{2,}?`, `(?m)^x$`, `\.\*\$`} {
		for _, s := range []string{"", "/api/v12/x/y", "AbBc abc", "aab b", "x/yy/", "xxx\nx", ".*$"} {
			checkSameMatches(t, re, s)
		}
	}
}

func FuzzRE2ToPCRE(f *testing.F) {
	f.Add(`^/api/v[0-9]+/(.*)$`, "/api/v1/x")
	f.Add(`(?i)a|b*?`, "AAbb")
	f.Fuzz(func(t *testing.T, re, subject string) {
		if len(re) > 64 {
			return
		}
		for i := 0; i < len(subject); i++ {
			if subject[i] >= 0x80 {
				return // PCRE here works on bytes, Go on runes: compare ASCII only
			}
		}
		checkSameMatches(t, re, subject)
	})
}
