package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ByteSize is a size in bytes. The file gives it as a whole number of bytes
// or with a binary unit: 512KiB, 32MiB, 1GiB (units B, KiB, MiB, GiB, TiB;
// a space before the unit is allowed).
type ByteSize int64

var byteUnits = []struct {
	name string
	size int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1},
}

// ParseByteSize reads a size written as ByteSize describes.
func ParseByteSize(s string) (ByteSize, error) {
	text := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if num, ok := strings.CutSuffix(text, u.name); ok {
			text, mult = strings.TrimSpace(num), u.size
			break
		}
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("must be a number of bytes or a size like 32MiB (units B, KiB, MiB, GiB, TiB) (got %q)", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("is too large (got %q)", s)
	}
	return ByteSize(n * mult), nil
}

// UnmarshalYAML accepts a number or a string, as ParseByteSize reads it.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: must be a size such as 32MiB, not a list or mapping", n.Line)}}
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		// A TypeError lets decoding go on and report the other problems.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*b = v
	return nil
}

// MarshalYAML writes the size as String does.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

// String writes the size with the largest binary unit that divides it:
// 33554432 is "32MiB", 1500 is "1500B".
func (b ByteSize) String() string {
	for _, u := range byteUnits {
		if b != 0 && int64(b)%u.size == 0 {
			return fmt.Sprintf("%d%s", int64(b)/u.size, u.name)
		}
	}
	return fmt.Sprintf("%dB", int64(b))
}
