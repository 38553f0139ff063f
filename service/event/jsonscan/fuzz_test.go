package jsonscan

import (
	"strings"
	"testing"
)

// FuzzScanner holds the scanner to encoding/json on arbitrary bytes: it
// accepts exactly the documents json.Valid accepts, locates the value where
// encoding/json has it, and walks an object's members as encoding/json
// decodes them into a map (see checkValue).
func FuzzScanner(f *testing.F) {
	for _, v := range append(append([]string{}, values...), invalid...) {
		f.Add([]byte(v))
		f.Add([]byte(`{"k":` + v + `,"` + strings.Trim(v, `"`) + `":[` + v + `]}`))
	}
	f.Add([]byte(strings.Repeat(`[{"a":`, 40) + "1" + strings.Repeat("}]", 40)))
	f.Fuzz(func(t *testing.T, doc []byte) {
		checkValue(t, doc)
	})
}
