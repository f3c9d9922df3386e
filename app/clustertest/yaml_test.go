package clustertest

import (
	"fmt"
	"strconv"
	"strings"
)

// The module has no YAML parser among its dependencies, so the deployment
// test reads the manifests with this one. It accepts the block style that
// the manifests use: "---" between documents, mappings of plain keys,
// sequences of "- " items, and plain, single- or double-quoted scalars, all
// kept as strings. Anything else, such as flow collections, block scalars,
// anchors or tabs, is an error, so a manifest never parses differently here
// than in kubectl.

// yamlLine is one line that holds content.
type yamlLine struct {
	num    int // 1-based, for messages
	indent int
	text   string
}

// parseYAML returns the documents of src as nested map[string]any, []any
// and string values.
func parseYAML(src string) ([]any, error) {
	var docs []any
	var lines []yamlLine
	flush := func() error {
		if len(lines) == 0 {
			return nil
		}
		p := &yamlParser{lines: lines}
		v, err := p.node(lines[0].indent)
		if err != nil {
			return err
		}
		if p.pos < len(p.lines) {
			l := p.lines[p.pos]
			return fmt.Errorf("line %d: unexpected indentation of %q", l.num, l.text)
		}
		docs = append(docs, v)
		lines = nil
		return nil
	}
	for i, raw := range strings.Split(src, "\n") {
		if strings.Contains(raw, "\t") {
			return nil, fmt.Errorf("line %d: tab character; indent with spaces", i+1)
		}
		text := strings.TrimRight(raw, " \r")
		trimmed := strings.TrimLeft(text, " ")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if text == "---" {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		lines = append(lines, yamlLine{num: i + 1, indent: len(text) - len(trimmed), text: trimmed})
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return docs, nil
}

type yamlParser struct {
	lines []yamlLine
	pos   int
}

func isSeqItem(text string) bool { return text == "-" || strings.HasPrefix(text, "- ") }

// node parses the mapping or sequence whose lines start at indent.
func (p *yamlParser) node(indent int) (any, error) {
	l := p.lines[p.pos]
	if l.indent != indent {
		return nil, fmt.Errorf("line %d: indentation %d, want %d", l.num, l.indent, indent)
	}
	if isSeqItem(l.text) {
		return p.sequence(indent)
	}
	return p.mapping(indent)
}

func (p *yamlParser) mapping(indent int) (map[string]any, error) {
	m := map[string]any{}
	for p.pos < len(p.lines) {
		l := p.lines[p.pos]
		if l.indent < indent {
			break
		}
		if l.indent > indent {
			return nil, fmt.Errorf("line %d: unexpected indentation of %q", l.num, l.text)
		}
		if isSeqItem(l.text) {
			return nil, fmt.Errorf("line %d: sequence item where a key is expected", l.num)
		}
		key, rest, ok := splitKey(l.text)
		if !ok {
			return nil, fmt.Errorf("line %d: want key: value, got %q", l.num, l.text)
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("line %d: duplicate key %q", l.num, key)
		}
		p.pos++
		if rest != "" {
			v, err := scalar(rest)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", l.num, err)
			}
			m[key] = v
			continue
		}
		// The value is the block below: deeper, or a sequence at the same
		// indentation, which YAML allows under a key.
		if p.pos < len(p.lines) {
			next := p.lines[p.pos]
			if next.indent > indent || (next.indent == indent && isSeqItem(next.text)) {
				v, err := p.node(next.indent)
				if err != nil {
					return nil, err
				}
				m[key] = v
				continue
			}
		}
		m[key] = nil
	}
	return m, nil
}

func (p *yamlParser) sequence(indent int) ([]any, error) {
	var list []any
	for p.pos < len(p.lines) {
		l := p.lines[p.pos]
		if l.indent != indent || !isSeqItem(l.text) {
			if l.indent > indent {
				return nil, fmt.Errorf("line %d: unexpected indentation of %q", l.num, l.text)
			}
			break
		}
		rest := strings.TrimLeft(strings.TrimPrefix(l.text, "-"), " ")
		switch _, _, isKey := splitKey(rest); {
		case rest == "":
			p.pos++
			if p.pos >= len(p.lines) || p.lines[p.pos].indent <= indent {
				return nil, fmt.Errorf("line %d: empty sequence item", l.num)
			}
			v, err := p.node(p.lines[p.pos].indent)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		case isKey:
			// "- key: value" opens a mapping whose keys line up after "- ".
			column := indent + len(l.text) - len(rest)
			p.lines[p.pos] = yamlLine{num: l.num, indent: column, text: rest}
			v, err := p.mapping(column)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		default:
			v, err := scalar(rest)
			if err != nil {
				return nil, fmt.Errorf("line %d: %w", l.num, err)
			}
			list = append(list, v)
			p.pos++
		}
	}
	return list, nil
}

// splitKey splits "key: value" or "key:" at the first colon that a space or
// the end of the line follows, outside quotes.
func splitKey(text string) (key, rest string, ok bool) {
	if text == "" || strings.ContainsRune(`"'{[`, rune(text[0])) {
		return "", "", false
	}
	for i := 0; i < len(text); i++ {
		if text[i] != ':' {
			continue
		}
		if i+1 == len(text) {
			return text[:i], "", true
		}
		if text[i+1] == ' ' {
			return text[:i], strings.TrimSpace(text[i+1:]), true
		}
	}
	return "", "", false
}

// scalar returns the string value of a scalar, without a trailing comment.
func scalar(s string) (string, error) {
	switch s[0] {
	case '"':
		end := closingQuote(s, '"')
		if end < 0 {
			return "", fmt.Errorf("unterminated double-quoted scalar %s", s)
		}
		if err := onlyComment(s[end+1:]); err != nil {
			return "", err
		}
		v, err := strconv.Unquote(s[:end+1])
		if err != nil {
			return "", fmt.Errorf("double-quoted scalar %s: %w", s, err)
		}
		return v, nil
	case '\'':
		end := closingQuote(s, '\'')
		if end < 0 {
			return "", fmt.Errorf("unterminated single-quoted scalar %s", s)
		}
		if err := onlyComment(s[end+1:]); err != nil {
			return "", err
		}
		return strings.ReplaceAll(s[1:end], "''", "'"), nil
	case '{', '[', '|', '>', '&', '*', '!', '%', '@', '`':
		return "", fmt.Errorf("unsupported YAML syntax %q; write block style with plain or quoted scalars", s)
	}
	if i := strings.Index(s, " #"); i >= 0 {
		s = s[:i]
	}
	if strings.Contains(s, ": ") || strings.HasSuffix(s, ":") {
		return "", fmt.Errorf("plain scalar %q contains a colon that YAML reads as a key; quote it", s)
	}
	return strings.TrimSpace(s), nil
}

// closingQuote returns the index of the quote that ends the scalar s opened
// with q, or -1.
func closingQuote(s string, q byte) int {
	for i := 1; i < len(s); i++ {
		switch {
		case q == '"' && s[i] == '\\':
			i++
		case q == '\'' && s[i] == '\'' && i+1 < len(s) && s[i+1] == '\'':
			i++
		case s[i] == q:
			return i
		}
	}
	return -1
}

func onlyComment(after string) error {
	after = strings.TrimSpace(after)
	if after != "" && !strings.HasPrefix(after, "#") {
		return fmt.Errorf("text %q after a quoted scalar", after)
	}
	return nil
}

// lookup follows a path of mapping keys and sequence indexes ("spec",
// "containers", "0", ...) through a parsed document.
func lookup(v any, path ...string) (any, error) {
	for i, step := range path {
		switch node := v.(type) {
		case map[string]any:
			next, ok := node[step]
			if !ok {
				return nil, fmt.Errorf("%s: no key %q", strings.Join(path[:i], "."), step)
			}
			v = next
		case []any:
			n, err := strconv.Atoi(step)
			if err != nil || n < 0 || n >= len(node) {
				return nil, fmt.Errorf("%s: no item %q in a sequence of %d", strings.Join(path[:i], "."), step, len(node))
			}
			v = node[n]
		default:
			return nil, fmt.Errorf("%s: a scalar has no %q", strings.Join(path[:i], "."), step)
		}
	}
	return v, nil
}
