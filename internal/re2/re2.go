// Package re2 reads regular expressions the way Envoy does. Envoy compiles every
// safe_regex with C++ RE2 (options RE2::Quiet: Perl-like syntax, UTF-8) and rejects the
// configuration when one does not compile. Go's regexp/syntax implements the same
// syntax with a few differences, so a regex is first rewritten into text Go parses to
// the same language, and only then parsed:
//
//   - \C (any byte) exists in RE2 only. It becomes a marker in the parse tree
//     (IsAnyByte), which callers print as a byte-level "any".
//   - Unicode classes (\pN, \p{Name}, \PN, \p{^Name}) name RE2's own table: exactly
//     its category and script names, or "Any". Go also accepts loose spellings
//     (\p{greek}, \p{Letter}, \p{Cn}, \p{LC}), which RE2 rejects; and Go 1.26 cannot
//     name scripts whose names have an underscore (\p{Old_Italic}), which RE2 accepts.
//     Such scripts are spelled out as explicit ranges of the same table.
//   - Capture names may be any Unicode letters, digits, marks and connector
//     punctuation in RE2, [A-Za-z0-9_] in Go. Groups are renamed (names never change
//     what matches or how groups are numbered).
//   - Go limits parse trees to a depth of 1000; RE2 has no such limit. A regex that
//     only exceeds it through its groups is parsed again with its groups made
//     non-capturing (group numbers are then lost; matching is unchanged).
//
// Everything else (escapes, classes, flags, repetition limits of 1000 and their
// nesting) is the same in both parsers, which share their design.
//
// Not modelled: RE2's limit on the size of the compiled program. Envoy rejects a
// regex whose program is larger than the runtime value re2.max_program_size.error_level
// (100 by default; 32768 in the bootstrap istio-agent writes). That size is RE2's
// instruction count after its own compilation to UTF-8 byte ranges, which Go's
// compiler does not reproduce, so such a regex is accepted here.
package re2

import (
	"errors"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Flags are the parse flags equivalent to RE2::Options' defaults.
const Flags = syntax.Perl

// anyByteName names the empty group that stands for \C until the tree is parsed.
// Valid as a Go capture name and unlikely in a regex: regexes name their groups with
// other words, and a clash would only make that group a second marker lookalike,
// which Parse tells apart (a marker's group is empty).
const anyByteName = "amesh_re2_any_byte"

// anyByteGroup is the text a \C becomes.
const anyByteGroup = "(?P<" + anyByteName + ">)"

// IsAnyByte reports whether re stands for RE2's \C: exactly one byte, whatever it is.
func IsAnyByte(re *syntax.Regexp) bool {
	return re.Op == syntax.OpCapture && re.Cap == 0 && re.Name == anyByteName
}

// Parse parses expr as Envoy's RE2 does and returns its tree with Go's operators;
// \C is a node for which IsAnyByte holds. Capture groups keep RE2's numbering (Cap),
// unless the regex nests deeper than Go allows (see the package comment). Errors are
// *syntax.Error.
func Parse(expr string) (*syntax.Regexp, error) {
	text, err := rewrite(expr, true)
	if err != nil {
		return nil, err
	}
	re, err := syntax.Parse(text, Flags)
	var se *syntax.Error
	if errors.As(err, &se) && se.Code == syntax.ErrNestingDepth {
		if text, err = rewrite(expr, false); err != nil {
			return nil, err
		}
		re, err = syntax.Parse(text, Flags)
	}
	if err != nil {
		// Errors quote the text parsed; when that is the whole regex, quote it as written.
		if errors.As(err, &se) && se.Expr == text {
			return nil, &syntax.Error{Code: se.Code, Expr: expr}
		}
		return nil, err
	}
	markAnyBytes(re)
	return re, nil
}

// Check reports whether expr compiles in RE2 (see Parse).
func Check(expr string) error {
	_, err := Parse(expr)
	return err
}

// CompileWhole compiles expr with Go's engine so that it matches whole strings only,
// for evaluating a matcher at translation time. \C matches one character there (one
// byte in RE2): the same on ASCII text, and the same answer to whether a regex can
// match the empty string or which literal every match starts with.
func CompileWhole(expr string) (*regexp.Regexp, error) {
	re, err := Parse(expr)
	if err != nil {
		return nil, err
	}
	replaceAnyBytes(re)
	return regexp.Compile(`^(?:` + re.String() + `)$`)
}

// markAnyBytes turns the marker groups into \C nodes: Cap 0, not counted as a group,
// and renumbers the groups after them, so that Cap is RE2's group number. Other
// groups lose the names the rewrite gave them.
func markAnyBytes(re *syntax.Regexp) {
	var markers []int // Cap of each marker, in increasing order
	var walk func(*syntax.Regexp)
	walk = func(r *syntax.Regexp) {
		if r.Op == syntax.OpCapture {
			if r.Name == anyByteName && r.Sub[0].Op == syntax.OpEmptyMatch {
				markers = append(markers, r.Cap)
			} else {
				r.Name = "" // the rewrite's, not the regex's
			}
		}
		for _, s := range r.Sub {
			walk(s)
		}
	}
	walk(re)
	if len(markers) == 0 {
		return
	}
	isMarker := map[int]bool{}
	for _, c := range markers {
		isMarker[c] = true
	}
	var renumber func(*syntax.Regexp)
	renumber = func(r *syntax.Regexp) {
		if r.Op == syntax.OpCapture {
			if isMarker[r.Cap] {
				r.Cap = 0
			} else {
				before := 0
				for _, c := range markers {
					if c < r.Cap {
						before++
					}
				}
				r.Cap -= before
			}
		}
		for _, s := range r.Sub {
			renumber(s)
		}
	}
	renumber(re)
}

// replaceAnyBytes makes every \C node match any one character.
func replaceAnyBytes(re *syntax.Regexp) {
	if IsAnyByte(re) {
		*re = syntax.Regexp{Op: syntax.OpAnyChar, Flags: re.Flags}
		return
	}
	for _, s := range re.Sub {
		replaceAnyBytes(s)
	}
}

// rewrite turns RE2 text into Go text with the same meaning (see the package
// comment). Groups stay capturing when capture is set. It reports RE2's errors for
// what it rewrites (Unicode class names); everything else is left for Go's parser,
// which rejects what RE2 rejects. It scans the regex the way RE2's parser does, so
// that a rewrite only ever happens where RE2 would read that construct.
func rewrite(s string, capture bool) (string, error) {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s):
			switch s[i+1] {
			case 'Q':
				// Literal text up to \E (or the end).
				end := len(s)
				if j := strings.Index(s[i+2:], `\E`); j >= 0 {
					end = i + 2 + j + 2
				}
				b.WriteString(s[i:end])
				i = end
			case 'C':
				b.WriteString(anyByteGroup)
				i += 2
			case 'p', 'P':
				n, err := unicodeClass(&b, s[i:], false)
				if err != nil {
					return "", err
				}
				i += n
			default:
				n := escapeLen(s[i:])
				b.WriteString(s[i : i+n])
				i += n
			}
		case c == '[':
			n, err := class(&b, s[i:])
			if err != nil {
				return "", err
			}
			i += n
		case c == '(':
			i += group(&b, s[i:], capture)
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), nil
}

// group writes the opening of the group that s starts with ("(") and returns how many
// bytes of s it read. Named groups lose their names; look-arounds and flag groups are
// left as they are (Go rejects the former, as RE2 does).
func group(b *strings.Builder, s string, capture bool) int {
	open := "("
	if !capture {
		open = "(?:"
	}
	if len(s) < 2 || s[1] != '?' {
		b.WriteString(open)
		return 1
	}
	// RE2 reports look-arounds as such before looking for a name.
	if len(s) > 3 && (s[2] == '=' || s[2] == '!') || len(s) > 4 && s[2] == '<' && (s[3] == '=' || s[3] == '!') {
		b.WriteString("(?")
		return 2
	}
	begin := 0
	switch {
	case len(s) > 4 && s[2] == 'P' && s[3] == '<':
		begin = 4
	case len(s) > 3 && s[2] == '<':
		begin = 3
	default:
		b.WriteString("(?") // flags: the rest is read as plain text
		return 2
	}
	end := strings.IndexByte(s[begin:], '>')
	if end < 0 || !validCaptureName(s[begin:begin+end]) {
		// Invalid in RE2, and in Go whose names are a subset of RE2's.
		b.WriteString("(?")
		return 2
	}
	if capture {
		// Not "(": a "?" after the name would make "(?".
		open = "(?P<g>"
	}
	b.WriteString(open)
	return begin + end + 1
}

// validCaptureName is RE2's rule: one or more letters (Lu, Ll, Lt, Lm, Lo), letter
// numbers (Nl), marks (Mn, Mc), decimal digits (Nd) or connector punctuation (Pc).
func validCaptureName(name string) bool {
	if name == "" || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if !unicode.In(r, unicode.Lu, unicode.Ll, unicode.Lt, unicode.Lm, unicode.Lo, unicode.Nl,
			unicode.Mn, unicode.Mc, unicode.Nd, unicode.Pc) {
			return false
		}
	}
	return true
}

// class writes the character class s starts with ("[") and returns its length. It
// follows RE2's ParseCharClass: an optional "^", a "]" first is literal, then POSIX
// classes ([:alpha:]), Unicode classes, Perl classes, and characters or ranges, up to
// the first "]" that is none of these. A class without its "]" is written as is
// (Go rejects it, as RE2 does).
func class(b *strings.Builder, s string) (int, error) {
	i := 1
	if i < len(s) && s[i] == '^' {
		i++
	}
	b.WriteString(s[:i])
	for first := true; i < len(s) && (s[i] != ']' || first); first = false {
		switch {
		case strings.HasPrefix(s[i:], "[:"):
			if j := strings.Index(s[i+2:], ":]"); j >= 0 {
				b.WriteString(s[i : i+2+j+2])
				i += 2 + j + 2
				continue
			}
		case len(s)-i > 2 && s[i] == '\\' && (s[i+1] == 'p' || s[i+1] == 'P'):
			n, err := unicodeClass(b, s[i:], true)
			if err != nil {
				return 0, err
			}
			i += n
			continue
		case len(s)-i > 1 && s[i] == '\\' && strings.IndexByte("dsDSwW", s[i+1]) >= 0:
			b.WriteString(s[i : i+2])
			i += 2
			continue
		}
		// A character, and a range when "-" and something other than "]" follow. The
		// end of a range is a character: "\p" there is an error in both parsers.
		n := charLen(s[i:])
		if i+n+1 < len(s) && s[i+n] == '-' && s[i+n+1] != ']' {
			n++
			n += charLen(s[i+n:])
		}
		b.WriteString(s[i : i+n])
		i += n
	}
	if i < len(s) {
		b.WriteByte(']')
		i++
	}
	return i, nil
}

// charLen is the length of the character (a rune or an escape) s starts with.
func charLen(s string) int {
	if s[0] == '\\' {
		return escapeLen(s)
	}
	_, n := utf8.DecodeRuneInString(s)
	return n
}

// escapeLen is the length of the escape s starts with ("\"): "\x{...}", "\xHH", an
// octal escape, or the backslash and one rune. Only its length matters: what it means
// is for Go's parser to decide.
func escapeLen(s string) int {
	if len(s) < 2 {
		return len(s)
	}
	switch c := s[1]; {
	case c == 'x' && len(s) > 2 && s[2] == '{':
		if j := strings.IndexByte(s[3:], '}'); j >= 0 && isHex(s[3:3+j]) {
			return 3 + j + 1
		}
		return 2
	case c == 'x':
		return min(len(s), 4)
	case c >= '0' && c <= '7':
		n := 2
		for n < len(s) && n < 4 && s[n] >= '0' && s[n] <= '7' {
			n++
		}
		return n
	}
	_, n := utf8.DecodeRuneInString(s[1:])
	return 1 + n
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; !(s[i] >= '0' && s[i] <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return s != ""
}

// unicodeClass writes the Unicode class s starts with (\p or \P) and returns its
// length. The name must be one of RE2's (see names.go); Go then reads it as written,
// or, for names Go cannot look up, the class is written as the ranges of the same
// table: as a class of its own outside a class, as more ranges inside one.
func unicodeClass(b *strings.Builder, s string, inClass bool) (int, error) {
	sign := s[1] == 'p'
	var name string
	n := 0
	if len(s) > 2 && s[2] == '{' {
		j := strings.IndexByte(s[3:], '}')
		if j < 0 {
			return 0, &syntax.Error{Code: syntax.ErrInvalidCharRange, Expr: s}
		}
		name, n = s[3:3+j], 3+j+1
	} else if len(s) > 2 {
		_, size := utf8.DecodeRuneInString(s[2:])
		name, n = s[2:2+size], 2+size
	} else {
		// "\p" at the end: Go reports it.
		b.WriteString(s)
		return len(s), nil
	}
	seq := s[:n]
	if strings.HasPrefix(name, "^") {
		sign, name = !sign, name[1:]
	}
	tab, ok := lookup(name)
	if !ok {
		return 0, &syntax.Error{Code: syntax.ErrInvalidCharRange, Expr: seq}
	}
	if goKnows(name) {
		b.WriteString(seq)
		return n, nil
	}
	ranges := tableRanges(tab)
	switch {
	case inClass && sign:
		writeRanges(b, ranges)
	case inClass:
		writeRanges(b, complement(ranges))
	case sign:
		b.WriteByte('[')
		writeRanges(b, ranges)
		b.WriteByte(']')
	default:
		b.WriteString("[^")
		writeRanges(b, ranges)
		b.WriteByte(']')
	}
	return n, nil
}

// tableRanges lists the code points of a table as sorted lo, hi pairs.
func tableRanges(t *unicode.RangeTable) []rune {
	var out []rune
	add := func(lo, hi rune) {
		if n := len(out); n > 0 && out[n-1]+1 >= lo {
			out[n-1] = hi
			return
		}
		out = append(out, lo, hi)
	}
	each := func(lo, hi, stride rune) {
		if stride == 1 {
			add(lo, hi)
			return
		}
		for r := lo; r <= hi; r += stride {
			add(r, r)
		}
	}
	for _, r := range t.R16 {
		each(rune(r.Lo), rune(r.Hi), rune(r.Stride))
	}
	for _, r := range t.R32 {
		each(rune(r.Lo), rune(r.Hi), rune(r.Stride))
	}
	return out
}

// complement returns the ranges of every code point not in sorted ranges r.
func complement(r []rune) []rune {
	var out []rune
	next := rune(0)
	for i := 0; i < len(r); i += 2 {
		if r[i] > next {
			out = append(out, next, r[i]-1)
		}
		next = r[i+1] + 1
	}
	if next <= unicode.MaxRune {
		out = append(out, next, unicode.MaxRune)
	}
	return out
}

func writeRanges(b *strings.Builder, r []rune) {
	for i := 0; i < len(r); i += 2 {
		writeRune(b, r[i])
		if r[i+1] != r[i] {
			b.WriteByte('-')
			writeRune(b, r[i+1])
		}
	}
}

func writeRune(b *strings.Builder, r rune) {
	b.WriteString(`\x{`)
	b.WriteString(strconv.FormatInt(int64(r), 16))
	b.WriteByte('}')
}
