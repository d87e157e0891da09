// Command verify-note is an independent verifier of signed notes (checkpoints
// and their cosignatures) for the integration tests: it reads one note on
// stdin and takes verifier keys (vkeys) as arguments, and exits 0 only if the
// note carries a valid signature by every one of them.
//
// The verification is the peers' own code, not ours: golang.org/x/mod/sumdb/note
// opens the note, and github.com/transparency-dev/formats/note builds the
// verifiers (Ed25519 0x01, ECDSA 0x02, cosignature/v1 0x04, RFC 6962 STH 0x05),
// the same library omniwitness and the transparency-dev clients use.
//
// Usage: verify-note VKEY... < note
//
// Exit status: 0 all keys signed the note; 1 a signature is missing or
// invalid; 2 bad usage or an unparseable key.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// The largest note accepted on stdin (a checkpoint with many cosignatures is
// a few kilobytes).
const maxNoteSize = 1 << 20

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(vkeys []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(vkeys) == 0 {
		fmt.Fprintln(stderr, "usage: verify-note VKEY... < note")
		return 2
	}
	verifiers := make([]note.Verifier, 0, len(vkeys))
	for _, vkey := range vkeys {
		v, err := fnote.NewVerifier(vkey)
		if err != nil {
			fmt.Fprintf(stderr, "verify-note: bad vkey %q: %v\n", vkey, err)
			return 2
		}
		verifiers = append(verifiers, v)
	}
	msg, err := io.ReadAll(io.LimitReader(stdin, maxNoteSize+1))
	if err != nil {
		fmt.Fprintf(stderr, "verify-note: reading stdin: %v\n", err)
		return 2
	}
	if len(msg) > maxNoteSize {
		fmt.Fprintf(stderr, "verify-note: note is larger than %d bytes\n", maxNoteSize)
		return 1
	}
	n, err := note.Open(msg, note.VerifierList(verifiers...))
	var unverified *note.UnverifiedNoteError
	switch {
	case errors.As(err, &unverified):
		// No signature by any of the keys: report it per key below.
		n = unverified.Note
	case err != nil:
		fmt.Fprintf(stderr, "verify-note: %v\n", err)
		return 1
	}
	missing := 0
	for _, v := range verifiers {
		if signedBy(n, v) {
			fmt.Fprintf(stdout, "ok %s+%08x\n", v.Name(), v.KeyHash())
		} else {
			fmt.Fprintf(stderr, "verify-note: no valid signature by %s+%08x\n", v.Name(), v.KeyHash())
			missing++
		}
	}
	if missing > 0 {
		return 1
	}
	return 0
}

// signedBy reports whether n carries a verified signature by v.
func signedBy(n *note.Note, v note.Verifier) bool {
	for _, sig := range n.Sigs {
		if sig.Name == v.Name() && sig.Hash == v.KeyHash() {
			return true
		}
	}
	return false
}
