package translate

// Envoy's safe_regex is RE2 and must match the whole string; lua-resty-expr's "~~" is
// ngx.re.find (PCRE, flags "jo"), a search. Rather than passing RE2 text through and
// hoping the dialects agree, the regex is parsed as RE2 reads it (package re2, on Go's
// regexp/syntax) and printed back as PCRE from the parse tree: every construct gets
// its PCRE spelling (RE2's \C, one byte, is PCRE's \C in either mode),
// captures become non-capturing groups, and the result is anchored with \A...\z (PCRE's
// "$" would also match before a final newline). When the pattern can match a non-ASCII
// character (".", negated classes, Unicode classes or literals), the PCRE is put in UTF
// mode with (*UTF), because RE2 matches code points and PCRE without it matches bytes.
// The PCRE is as plain as that allows, for people reading it in /debug/apisix: groups
// only where precedence needs them, escapes only on characters PCRE would read as
// syntax, and no anchor doubled where the regex already has its own (^...$).

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"

	"github.com/amesh-dev/amesh/internal/re2"
)

// pcreAnchored translates an RE2 regex into a PCRE that matches exactly the strings RE2
// matches as a whole.
func pcreAnchored(expr string) (string, error) {
	re, err := re2.Parse(expr)
	if err != nil {
		return "", fmt.Errorf("invalid RE2 regex %q: %w", expr, err)
	}
	var p pcrePrinter
	// Concatenation is the loosest binding the printer emits (an alternation prints
	// its own group), so the body needs no group between the anchors; and \A\A is
	// \A, \z\z is \z.
	if !edge(re, 0, syntax.OpBeginText) {
		p.b.WriteString(`\A`)
	}
	p.node(re)
	if !edge(re, -1, syntax.OpEndText) {
		p.b.WriteString(`\z`)
	}
	prefix := ""
	if p.utf {
		prefix = "(*UTF)"
	}
	return prefix + p.b.String(), nil
}

// edge reports whether re begins (at 0) or ends (at -1) with an op of kind op: re is
// that op, or a concatenation (or a capture of one) whose first or last element is.
func edge(re *syntax.Regexp, at int, op syntax.Op) bool {
	for {
		switch re.Op {
		case op:
			return true
		case syntax.OpCapture:
			re = re.Sub[0]
		case syntax.OpConcat:
			if len(re.Sub) == 0 {
				return false
			}
			if at == 0 {
				re = re.Sub[0]
			} else {
				re = re.Sub[len(re.Sub)-1]
			}
		default:
			return false
		}
	}
}

// atom reports whether re prints as one unit a quantifier can follow without a group.
func atom(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpCharClass:
		return len(re.Rune) > 0 // an empty class prints as (?!)
	case syntax.OpAnyChar, syntax.OpAnyCharNotNL, syntax.OpAlternate:
		return true
	case syntax.OpLiteral:
		return len(re.Rune) == 1
	case syntax.OpCapture:
		return re2.IsAnyByte(re) || atom(re.Sub[0])
	}
	return false
}

type pcrePrinter struct {
	b       strings.Builder
	utf     bool
	inClass bool // inside [...], where every ASCII punctuation character is escaped
}

func (p *pcrePrinter) node(re *syntax.Regexp) {
	switch re.Op {
	case syntax.OpNoMatch:
		p.b.WriteString(`(?!)`)
	case syntax.OpEmptyMatch:
		p.b.WriteString(`(?:)`)
	case syntax.OpLiteral:
		fold := re.Flags&syntax.FoldCase != 0
		if fold {
			p.b.WriteString(`(?i:`)
		}
		for _, r := range re.Rune {
			p.char(r)
		}
		if fold {
			p.b.WriteString(`)`)
		}
	case syntax.OpCharClass:
		p.class(re.Rune)
	case syntax.OpAnyCharNotNL:
		p.utf = true
		p.b.WriteString(`[^\n]`)
	case syntax.OpAnyChar:
		p.utf = true
		p.b.WriteString(`(?s:.)`)
	case syntax.OpBeginLine:
		p.b.WriteString(`(?m:^)`)
	case syntax.OpEndLine:
		p.b.WriteString(`(?m:$)`)
	case syntax.OpBeginText:
		p.b.WriteString(`\A`)
	case syntax.OpEndText:
		p.b.WriteString(`\z`)
	case syntax.OpWordBoundary:
		p.b.WriteString(`\b`)
	case syntax.OpNoWordBoundary:
		p.b.WriteString(`\B`)
	case syntax.OpCapture:
		if re2.IsAnyByte(re) {
			p.b.WriteString(`\C`)
			return
		}
		// Nothing refers to groups; the sub-expression prints concatenable.
		p.node(re.Sub[0])
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest, syntax.OpRepeat:
		if atom(re.Sub[0]) {
			p.node(re.Sub[0])
		} else {
			p.b.WriteString(`(?:`)
			p.node(re.Sub[0])
			p.b.WriteString(`)`)
		}
		switch re.Op {
		case syntax.OpStar:
			p.b.WriteString(`*`)
		case syntax.OpPlus:
			p.b.WriteString(`+`)
		case syntax.OpQuest:
			p.b.WriteString(`?`)
		default:
			p.b.WriteString(`{` + strconv.Itoa(re.Min))
			if re.Max != re.Min {
				p.b.WriteString(`,`)
				if re.Max >= 0 {
					p.b.WriteString(strconv.Itoa(re.Max))
				}
			}
			p.b.WriteString(`}`)
		}
		if re.Flags&syntax.NonGreedy != 0 {
			p.b.WriteString(`?`)
		}
	case syntax.OpConcat:
		for _, s := range re.Sub {
			p.node(s)
		}
	case syntax.OpAlternate:
		p.b.WriteString(`(?:`)
		for i, s := range re.Sub {
			if i > 0 {
				p.b.WriteString(`|`)
			}
			p.node(s)
		}
		p.b.WriteString(`)`)
	default:
		// regexp/syntax has no other ops; be loud rather than wrong if one appears.
		p.b.WriteString(`(?!)`)
	}
}

// class prints a character class from RE2's sorted range pairs.
func (p *pcrePrinter) class(ranges []rune) {
	if len(ranges) == 0 {
		p.b.WriteString(`(?!)`)
		return
	}
	p.b.WriteString(`[`)
	p.inClass = true
	for i := 0; i+1 < len(ranges); i += 2 {
		lo, hi := ranges[i], ranges[i+1]
		p.char(lo)
		if hi != lo {
			p.b.WriteString(`-`)
			p.char(hi)
		}
	}
	p.inClass = false
	p.b.WriteString(`]`)
}

// char prints one code point so that it is literal in PCRE, inside or outside a class.
func (p *pcrePrinter) char(r rune) {
	switch {
	case r >= 0x80:
		p.utf = true
		fmt.Fprintf(&p.b, `\x{%x}`, r)
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		p.b.WriteRune(r)
	case r > 0x20 && r < 0x7f && !p.inClass && !strings.ContainsRune(pcreMeta, r):
		p.b.WriteRune(r)
	case r > 0x20 && r < 0x7f:
		// A backslash before any ASCII punctuation is a literal in PCRE.
		p.b.WriteByte('\\')
		p.b.WriteRune(r)
	default:
		fmt.Fprintf(&p.b, `\x{%x}`, r)
	}
}

// pcreMeta are the characters that are syntax outside a class in PCRE (without the x
// flag, which ngx.re's "jo" does not set); every other printable ASCII character
// stands for itself.
const pcreMeta = `\^$.[]|()?*+{}`

// quoteLiteral escapes s (bytes, not code points) for use inside a PCRE in byte mode,
// outside a class.
func quoteLiteral(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			b.WriteByte(c)
		case c > 0x20 && c < 0x7f && !strings.ContainsRune(pcreMeta, rune(c)):
			b.WriteByte(c)
		case c > 0x20 && c < 0x7f:
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String()
}

// isRegexError reports whether err is a regex RE2 does not compile.
func isRegexError(err error) bool {
	var se *syntax.Error
	return errors.As(err, &se)
}

// compileWhole compiles an RE2 regex with Go's engine so that it matches whole
// strings only; used to evaluate matchers at translation time (see re2.CompileWhole).
func compileWhole(re string) (*regexp.Regexp, error) { return re2.CompileWhole(re) }
