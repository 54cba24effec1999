package translate

import (
	"regexp"
	"strings"
	"testing"
)

// The emitted PCRE is the plainest spelling of the RE2 regex: no doubled anchors, no
// groups that precedence does not need, no escapes on characters PCRE takes literally.
func TestPCREAnchoredIsPlain(t *testing.T) {
	for re2, want := range map[string]string{
		`^(yes|true)$`:            `\A(?:yes|true)\z`,
		`yes|true`:                `\A(?:yes|true)\z`,
		`/api/v[0-9]+/reviews/.*`: `(*UTF)\A/api/v[0-9]+/reviews/[^\n]*\z`,
		`^/static/`:               `\A/static/\z`,
		`/a$`:                     `\A/a\z`,
		`(ab)+c?`:                 `\A(?:ab)+c?\z`,
		`(ab|cd)*`:                `\A(?:ab|cd)*\z`,
		`x{2,3}`:                  `\Ax{2,3}\z`,
		`a.b`:                     `(*UTF)\Aa[^\n]b\z`,
		`a\.b\+c\{1\}`:            `\Aa\.b\+c\{1\}\z`,
		`[-/.:]+`:                 `\A[\--\/\:]+\z`,
		`(?i)ab`:                  `\A(?i:AB)\z`,
		`(?:(?:a))*`:              `\Aa*\z`,
		`^$`:                      `\A\z`,
		`(^a)(b$)`:                `\Aab\z`,
		`a^b`:                     `\Aa\Ab\z`,
		`a*?`:                     `\Aa*?\z`,
		`\bword\b`:                `\A\bword\b\z`,
		`k=v&x,y;z#@!~%'"<>`:      "\\Ak=v&x,y;z#@!~%'\"<>\\z",
		`(?s:.)`:                  `(*UTF)\A(?s:.)\z`,
		`ab|^cd$`:                 `\A(?:ab|\Acd\z)\z`,
		`(a(b|c))`:                `\Aa[b-c]\z`,
	} {
		got, err := pcreAnchored(re2)
		if err != nil {
			t.Errorf("%s: %v", re2, err)
			continue
		}
		if got != want {
			t.Errorf("%s: emitted %s, want %s", re2, got, want)
		}
	}
}

// Simpler is only kept where it means the same: the emitted PCRE (run with Go's engine,
// which reads this subset alike) accepts exactly the strings RE2 matches whole.
func TestPCREAnchoredMatchesLikeRE2(t *testing.T) {
	regexes := []string{`^(yes|true)$`, `/api/v[0-9]+/reviews/.*`, `(ab)+c?`, `(ab|cd)*`, `x{2,3}`, `a.b`,
		`[-/.:]+`, `(?i)ab`, `^$`, `(^a)(b$)`, `ab|^cd$`, `a*?b`, `(a(b|c))`, `\bword\b`, `k=v&x`, `[^/]+/[a-c]{1,2}`}
	subjects := []string{"", "yes", "true", "yest", "/api/v1/reviews/x", "/api/v/reviews/", "ab", "abab", "ababc", "abc",
		"ac", "aab", "xx", "xxx", "xxxx", "a.b", "a\nb", "-/.:", "AB", "Ab", "cd", "abcd", "b", "aab", "word", "k=v&x", "x/a", "x/abc", "/a"}
	for _, re2 := range regexes {
		whole := regexp.MustCompile(`^(?:` + re2 + `)$`)
		pcre, err := pcreAnchored(re2)
		if err != nil {
			t.Fatal(err)
		}
		got := regexp.MustCompile(strings.TrimPrefix(pcre, "(*UTF)"))
		for _, s := range subjects {
			if whole.MatchString(s) != got.MatchString(s) {
				t.Errorf("%s as %s: %q matches %v, RE2 says %v", re2, pcre, s, got.MatchString(s), whole.MatchString(s))
			}
		}
	}
}
