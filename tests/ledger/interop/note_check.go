// Checks signed notes with golang.org/x/mod/sumdb/note (the Go reference implementation, not ours).
// Usage: note_check VKEY < notes   (notes separated by a line "----"); prints one line, exit 0 when all verify.
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"golang.org/x/mod/sumdb/note"
)

func main() {
	v, err := note.NewVerifier(os.Args[1])
	if err != nil {
		fmt.Println("FAIL: verifier key:", err)
		os.Exit(2)
	}
	all, _ := io.ReadAll(os.Stdin)
	notes := bytes.Split(all, []byte("----\n"))
	for i, msg := range notes {
		n, err := note.Open(msg, note.VerifierList(v))
		if err != nil {
			fmt.Printf("FAIL: note %d: %v\n", i, err)
			os.Exit(1)
		}
		if len(n.Sigs) != 1 || n.Sigs[0].Name != v.Name() {
			fmt.Printf("FAIL: note %d: not signed by %s\n", i, v.Name())
			os.Exit(1)
		}
	}
	fmt.Printf("OK: %d notes\n", len(notes))
}
