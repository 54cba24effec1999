package re2

import (
	"regexp/syntax"
	"sync"
	"unicode"
)

// re2Categories are the general categories RE2 names: the one-letter groups and their
// subcategories, without Cn (unassigned) and LC (cased letters), which Go adds.
var re2Categories = []string{
	"C", "Cc", "Cf", "Co", "Cs",
	"L", "Ll", "Lm", "Lo", "Lt", "Lu",
	"M", "Mc", "Me", "Mn",
	"N", "Nd", "Nl", "No",
	"P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps",
	"S", "Sc", "Sk", "Sm", "So",
	"Z", "Zl", "Zp", "Zs",
}

// anyTable is \p{Any}: every code point.
var anyTable = &unicode.RangeTable{R32: []unicode.Range32{{Lo: 0, Hi: unicode.MaxRune, Stride: 1}}}

var names struct {
	once sync.Once
	// tables: RE2's names (spelled exactly) and their tables. Scripts come from Go's
	// table of the Unicode version Go implements, as do all ranges.
	tables map[string]*unicode.RangeTable
	// goKnows: names Go's parser reads as the same table.
	goKnows map[string]bool
}

func loadNames() {
	names.tables = map[string]*unicode.RangeTable{"Any": anyTable}
	for _, n := range re2Categories {
		names.tables[n] = unicode.Categories[n]
	}
	for n, t := range unicode.Scripts {
		names.tables[n] = t
	}
	names.goKnows = map[string]bool{}
	for n := range names.tables {
		if _, err := syntax.Parse(`\p{`+n+`}`, syntax.Perl); err == nil {
			names.goKnows[n] = true
		}
	}
}

// lookup returns the table of an RE2 Unicode class name.
func lookup(name string) (*unicode.RangeTable, bool) {
	names.once.Do(loadNames)
	t, ok := names.tables[name]
	return t, ok && t != nil
}

// goKnows reports whether Go's parser reads \p{name} as RE2 does.
func goKnows(name string) bool {
	names.once.Do(loadNames)
	return names.goKnows[name]
}
