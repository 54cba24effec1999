package re2

import (
	"regexp/syntax"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// Regexes C++ RE2 compiles (so Envoy accepts them) that Go's parser rejects as written.
var re2Only = []string{
	`\C`,
	`/a\C+b`,
	`x|\C`,
	`(\C)(a)`,
	`\p{Old_Italic}`,
	`[\p{Old_Italic}x]`,
	`\P{Old_Italic}`,
	`[^\P{Old_Italic}a-z]`,
	`(?i)[\P{Warang_Citi}]`,
	`\p{^SignWriting}`,
	`(?P<имя>x)`,
	`(?<名前>x)(?P<x_1>y)`,
	strings.Repeat("(", 1001) + "a" + strings.Repeat(")", 1001),
}

// Regexes Go's parser accepts that C++ RE2 rejects: Envoy NACKs them.
var goOnly = []string{
	`\p{greek}`,
	`\pl`,
	`\p{Letter}`,
	`\p{Cn}`,
	`\p{LC}`,
	`\p{Assigned}`,
	`\p{ASCII}`,
	`[\p{lu}]`,
}

// Regexes both reject.
var invalid = []string{
	`/api/(unclosed`,
	`a{1001}`,
	`(a{100}){100}`,
	`a**`,
	`x{2}{3}`,
	`[\C]`,
	`\Z`,
	`(?=x)`,
	`(?!x)`,
	`(?<=x)`,
	`(?<!x)`,
	`(?P=n)`,
	`(?P<>x)`,
	`(?P<a-b>x)`,
	`(?P<a`,
	`\8`,
	`[a-\pL]`,
	`\p{Greek`,
	`[z-a]`,
	`a\`,
	`[[:nope:]]`,
	`)`,
}

// Regexes both accept; the rewrite must leave their meaning alone.
var common = []string{
	`/api/v[0-9]+/.*`,
	`\Q(\C)[\E.`,
	`[\](]`,
	`[(][)]`,
	`[]a]`,
	`[^]a]`,
	`[[:alpha:]\d-]`,
	`[\d-z]`,
	`\x{10FFFF}\x41\101\0`,
	`(?i)k\pL\p{Greek}[\PN]`,
	`(?s).(?U)a*(?-s:.)`,
	`(?P<a>x)(?<b>y)(z)`,
	`a{2,5}?b{,3}`,
	`\pN\p{^Lu}`,
}

func TestParseAcceptsWhatRE2Accepts(t *testing.T) {
	for _, re := range append(append([]string{}, re2Only...), common...) {
		if _, err := Parse(re); err != nil {
			t.Errorf("Parse(%q): %v, want accepted (RE2 compiles it)", re, err)
		}
	}
}

func TestParseRejectsWhatRE2Rejects(t *testing.T) {
	for _, re := range append(append([]string{}, goOnly...), invalid...) {
		err := Parse2Err(re)
		if err == nil {
			t.Errorf("Parse(%q) accepted it; RE2 rejects it", re)
			continue
		}
		var se *syntax.Error
		if !asSyntax(err, &se) {
			t.Errorf("Parse(%q): error %T %v, want *syntax.Error", re, err, err)
		}
	}
	// The error quotes the regex as written, not the rewritten text.
	err := Parse2Err(`(\C` + "")
	if err == nil || !strings.Contains(err.Error(), "`(\\C`") {
		t.Errorf("error %v does not quote the regex", err)
	}
}

func Parse2Err(re string) error { _, err := Parse(re); return err }

func asSyntax(err error, se **syntax.Error) bool {
	e, ok := err.(*syntax.Error)
	*se = e
	return ok
}

// Where both parsers accept a regex, Parse gives Go's own tree (up to group names).
func TestParseKeepsCommonMeaning(t *testing.T) {
	for _, re := range common {
		got, err := Parse(re)
		if err != nil {
			t.Fatal(err)
		}
		want, err := syntax.Parse(re, Flags)
		if err != nil {
			t.Fatal(err)
		}
		clearNames(want)
		if !got.Equal(want) {
			t.Errorf("%q: Parse gives %v, Go gives %v", re, got, want)
		}
		if got.MaxCap() != want.MaxCap() {
			t.Errorf("%q: %d groups, Go counts %d", re, got.MaxCap(), want.MaxCap())
		}
	}
}

func clearNames(re *syntax.Regexp) {
	re.Name = ""
	for _, s := range re.Sub {
		clearNames(s)
	}
}

// \C is a node of its own, not a group: groups keep RE2's numbers.
func TestAnyByteNodes(t *testing.T) {
	re, err := Parse(`(a)\C(b)\C*`)
	if err != nil {
		t.Fatal(err)
	}
	var anys int
	var caps []int
	var walk func(*syntax.Regexp)
	walk = func(r *syntax.Regexp) {
		if IsAnyByte(r) {
			anys++
		} else if r.Op == syntax.OpCapture {
			caps = append(caps, r.Cap)
		}
		for _, s := range r.Sub {
			walk(s)
		}
	}
	walk(re)
	if anys != 2 || !slices.Equal(caps, []int{1, 2}) || re.MaxCap() != 2 {
		t.Errorf("\\C nodes %d, groups %v, MaxCap %d; want 2, [1 2], 2", anys, caps, re.MaxCap())
	}
	// A group that merely carries the marker's name is an ordinary group.
	re, err = Parse(`(?P<` + anyByteName + `>a)`)
	if err != nil || IsAnyByte(re) || re.MaxCap() != 1 {
		t.Errorf("named group mistaken for \\C: %v %v", re, err)
	}
}

// Every RE2 class name reads as its table: Go's own lookup where it has one, the
// ranges written out where not, under case folding and negation too.
func TestUnicodeClassesMatchTables(t *testing.T) {
	names.once.Do(loadNames)
	written := 0
	for name, tab := range names.tables {
		want := tableRanges(tab)
		for _, tc := range []struct {
			expr string
			want []rune
		}{
			{`\p{` + name + `}`, want},
			{`[\p{` + name + `}]`, want},
			{`\P{` + name + `}`, complement(want)},
			{`[^\p{^` + name + `}]`, want},
			{`[\P{` + name + `}]`, complement(want)},
		} {
			re, err := Parse(tc.expr)
			if err != nil {
				t.Fatalf("%s: %v", tc.expr, err)
			}
			if got := classOf(t, re); !slices.Equal(got, tc.want) {
				t.Errorf("%s: class differs from the table (%d ranges, want %d)", tc.expr, len(got)/2, len(tc.want)/2)
			}
		}
		if goKnows(name) {
			continue
		}
		written++
		// Written-out ranges inside a negated, case-folded class: Go folds the
		// complement, RE2 complements the folded table. They agree when the table is
		// closed under case folding.
		for _, r := range want {
			for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
				if !unicode.Is(tab, f) {
					t.Errorf("%s: %U folds to %U outside the script; [\\P{%s}] under (?i) would differ from RE2", name, r, f, name)
				}
			}
		}
	}
	if written == 0 {
		t.Log("Go reads every RE2 class name itself; nothing is written out")
	}
}

func classOf(t *testing.T, re *syntax.Regexp) []rune {
	t.Helper()
	switch re.Op {
	case syntax.OpCharClass:
		return re.Rune
	case syntax.OpAnyChar:
		return []rune{0, unicode.MaxRune}
	case syntax.OpLiteral:
		if len(re.Rune) == 1 && re.Flags&syntax.FoldCase == 0 {
			return []rune{re.Rune[0], re.Rune[0]}
		}
	}
	t.Fatalf("not a class: %v (%v)", re, re.Op)
	return nil
}

func TestCompileWhole(t *testing.T) {
	re, err := CompileWhole(`/api\Cx`)
	if err != nil {
		t.Fatal(err)
	}
	if lp, _ := re.LiteralPrefix(); lp != "/api" {
		t.Errorf("literal prefix %q, want /api (\\C consumes a byte)", lp)
	}
	if !re.MatchString("/api-x") || re.MatchString("/apix") || re.MatchString("/api-x/") {
		t.Error("whole-string matching of /api\\Cx is wrong")
	}
	if re, err := CompileWhole(`\C*`); err != nil || !re.MatchString("") {
		t.Errorf("\\C* must match the empty string: %v", err)
	}
	if re, err := CompileWhole(`\C`); err != nil || re.MatchString("") {
		t.Errorf("\\C must not match the empty string: %v", err)
	}
}
