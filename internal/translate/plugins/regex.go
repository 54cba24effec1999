package plugins

import (
	"fmt"
	"regexp/syntax"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/amesh-dev/amesh/internal/re2"
)

// Envoy's regexes are RE2 (safe_regex, regex_rewrite; read with package re2); APISIX evaluates PCRE through
// ngx.re with the options "jo": no UTF-8 mode, so the subject is a byte string. The
// converter below re-emits a parsed RE2 tree in PCRE syntax, spelling out every
// construct whose meaning differs between the two engines:
//   - `$` in RE2 matches only at the end of the text; in PCRE also before a final
//     newline. Emitted as \z.
//   - Perl classes (\d, \s, \w) are expanded into explicit ASCII classes, because PCRE's
//     \s also matches \v.
//   - Non-ASCII literals become their UTF-8 bytes. A class that includes all of
//     U+0080..U+10FFFF (typically a negated class such as [^/]) becomes a byte class
//     that includes \x80-\xff, so it consumes a multi-byte character one byte at a time:
//     the same for any repetition of it, and for ASCII subjects. Other non-ASCII classes
//     and case folding of non-ASCII letters have no byte equivalent and are rejected.

// re2ToPCRE converts an RE2 pattern into a PCRE pattern with the same matches. It
// returns the number of capture groups, for checking substitution strings.
func re2ToPCRE(pattern string) (string, int, error) {
	re, err := re2.Parse(pattern)
	if err != nil {
		return "", 0, fmt.Errorf("invalid RE2 regex %q: %v", pattern, err)
	}
	var b strings.Builder
	if err := emit(&b, re); err != nil {
		return "", 0, fmt.Errorf("regex %q: %v", pattern, err)
	}
	return b.String(), re.MaxCap(), nil
}

func emit(b *strings.Builder, re *syntax.Regexp) error {
	switch re.Op {
	case syntax.OpNoMatch:
		b.WriteString("(?!)")
	case syntax.OpEmptyMatch:
		b.WriteString("(?:)")
	case syntax.OpLiteral:
		fold := re.Flags&syntax.FoldCase != 0
		if fold {
			b.WriteString("(?i:")
		}
		for _, r := range re.Rune {
			if fold && r >= utf8.RuneSelf {
				return fmt.Errorf("case-insensitive non-ASCII literal %q has no byte-level PCRE equivalent", r)
			}
			writeLiteralRune(b, r)
		}
		if fold {
			b.WriteString(")")
		}
	case syntax.OpCharClass:
		return emitClass(b, re.Rune)
	case syntax.OpAnyCharNotNL:
		b.WriteString(`[^\n]`)
	case syntax.OpAnyChar:
		b.WriteString(`(?s:.)`)
	case syntax.OpBeginLine:
		b.WriteString(`(?m:^)`)
	case syntax.OpEndLine:
		b.WriteString(`(?m:$)`)
	case syntax.OpBeginText:
		b.WriteString(`\A`)
	case syntax.OpEndText:
		b.WriteString(`\z`)
	case syntax.OpWordBoundary:
		b.WriteString(`\b`)
	case syntax.OpNoWordBoundary:
		b.WriteString(`\B`)
	case syntax.OpCapture:
		if re2.IsAnyByte(re) {
			b.WriteString(`[\x00-\xff]`) // RE2's \C: one byte, which is what this mode matches
			return nil
		}
		b.WriteString("(")
		if err := emit(b, re.Sub[0]); err != nil {
			return err
		}
		b.WriteString(")")
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest, syntax.OpRepeat:
		b.WriteString("(?:")
		if err := emit(b, re.Sub[0]); err != nil {
			return err
		}
		b.WriteString(")")
		switch re.Op {
		case syntax.OpStar:
			b.WriteString("*")
		case syntax.OpPlus:
			b.WriteString("+")
		case syntax.OpQuest:
			b.WriteString("?")
		default:
			switch {
			case re.Max == -1:
				fmt.Fprintf(b, "{%d,}", re.Min)
			case re.Max == re.Min:
				fmt.Fprintf(b, "{%d}", re.Min)
			default:
				fmt.Fprintf(b, "{%d,%d}", re.Min, re.Max)
			}
		}
		if re.Flags&syntax.NonGreedy != 0 {
			b.WriteString("?")
		}
	case syntax.OpConcat:
		for _, s := range re.Sub {
			if err := emit(b, s); err != nil {
				return err
			}
		}
	case syntax.OpAlternate:
		b.WriteString("(?:")
		for i, s := range re.Sub {
			if i > 0 {
				b.WriteString("|")
			}
			if err := emit(b, s); err != nil {
				return err
			}
		}
		b.WriteString(")")
	default:
		return fmt.Errorf("unsupported regex construct %v", re.Op)
	}
	return nil
}

// emitClass writes a character class given as sorted [lo, hi] rune pairs.
func emitClass(b *strings.Builder, ranges []rune) error {
	if len(ranges) == 0 {
		b.WriteString("(?!)")
		return nil
	}
	var ascii []rune
	wide := false
	for i := 0; i < len(ranges); i += 2 {
		lo, hi := ranges[i], ranges[i+1]
		if lo == hi && (lo == 0x17f || lo == 0x212a) {
			// Case folding adds U+017F (long s) and U+212A (Kelvin sign) to classes
			// with s or k; byte-level PCRE cannot fold them. They are dropped: a path
			// would only contain them percent-decoded.
			continue
		}
		if hi < utf8.RuneSelf {
			ascii = append(ascii, lo, hi)
			continue
		}
		// The only non-ASCII part allowed is the whole of U+0080..U+10FFFF, which
		// Go's parser keeps in one final range.
		if lo < utf8.RuneSelf {
			ascii = append(ascii, lo, utf8.RuneSelf-1)
			lo = utf8.RuneSelf
		}
		if lo != utf8.RuneSelf || hi != utf8.MaxRune {
			return fmt.Errorf("character class with non-ASCII range %U-%U has no byte-level PCRE equivalent", lo, hi)
		}
		wide = true
	}
	b.WriteString("[")
	for i := 0; i < len(ascii); i += 2 {
		writeClassRune(b, ascii[i])
		if ascii[i+1] != ascii[i] {
			b.WriteString("-")
			writeClassRune(b, ascii[i+1])
		}
	}
	if wide {
		b.WriteString(`\x80-\xff`)
	}
	b.WriteString("]")
	return nil
}

func writeLiteralRune(b *strings.Builder, r rune) {
	if r >= utf8.RuneSelf {
		var buf [utf8.UTFMax]byte
		n := utf8.EncodeRune(buf[:], r)
		for _, c := range buf[:n] {
			fmt.Fprintf(b, `\x%02x`, c)
		}
		return
	}
	writeLiteralByte(b, byte(r))
}

func writeLiteralByte(b *strings.Builder, c byte) {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		b.WriteByte(c)
	case c > ' ' && c < 0x7f:
		// PCRE treats a backslash before any non-alphanumeric character as a literal.
		b.WriteByte('\\')
		b.WriteByte(c)
	default:
		fmt.Fprintf(b, `\x%02x`, c)
	}
}

func writeClassRune(b *strings.Builder, r rune) {
	c := byte(r)
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		b.WriteByte(c)
	default:
		fmt.Fprintf(b, `\x%02x`, c)
	}
}

// quotePCRE returns a PCRE pattern matching exactly the bytes of s.
func quotePCRE(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		writeLiteralByte(&b, s[i])
	}
	return b.String()
}

// anchoredAtStart reports whether every match of re must begin at offset 0 of the
// text, so that RE2's replace-all and PCRE's replace-first give the same result.
func anchoredAtStart(pattern string) bool {
	re, err := re2.Parse(pattern)
	if err != nil {
		return false
	}
	return startsAnchored(re)
}

func startsAnchored(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpBeginText:
		return true
	case syntax.OpCapture, syntax.OpPlus:
		return startsAnchored(re.Sub[0])
	case syntax.OpRepeat:
		return re.Min >= 1 && startsAnchored(re.Sub[0])
	case syntax.OpConcat:
		return len(re.Sub) > 0 && startsAnchored(re.Sub[0])
	case syntax.OpAlternate:
		for _, s := range re.Sub {
			if !startsAnchored(s) {
				return false
			}
		}
		return true
	}
	return false
}

// re2SubstToNgx converts an RE2 rewrite string (\0..\9 name groups, \\ is a backslash)
// into an ngx.re.sub template (${N} names groups, $$ is a dollar sign).
func re2SubstToNgx(subst string, groups int) (string, error) {
	var b strings.Builder
	for i := 0; i < len(subst); i++ {
		c := subst[i]
		switch c {
		case '$':
			b.WriteString("$$")
		case '\\':
			if i+1 == len(subst) {
				return "", fmt.Errorf("substitution %q ends with a lone backslash", subst)
			}
			i++
			n := subst[i]
			switch {
			case n == '\\':
				b.WriteByte('\\')
			case n >= '0' && n <= '9':
				g := int(n - '0')
				if g > groups {
					return "", fmt.Errorf("substitution %q refers to group %d; the regex has %d", subst, g, groups)
				}
				b.WriteString("${" + strconv.Itoa(g) + "}")
			default:
				return "", fmt.Errorf("substitution %q has an invalid escape \\%c", subst, n)
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}
