// A naive extractor on Go's archive/tar, as many Go programs write one: each header's Name and
// Linkname joined to the destination as they are. tests/extractors.py builds and runs it.
package main

import (
	"archive/tar"
	"io"
	"os"
	"path/filepath"
)

func main() {
	dest := os.Args[1]
	tr := tar.NewReader(os.Stdin)
	for {
		hdr, err := tr.Next()
		if err != nil {
			return
		}
		path := filepath.Join(dest, hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			os.MkdirAll(path, 0o755)
		case tar.TypeSymlink:
			os.MkdirAll(filepath.Dir(path), 0o755)
			os.Symlink(hdr.Linkname, path)
		case tar.TypeLink:
			os.Link(filepath.Join(dest, hdr.Linkname), path)
		default:
			os.MkdirAll(filepath.Dir(path), 0o755)
			f, err := os.Create(path)
			if err == nil {
				io.Copy(f, tr)
				f.Close()
			}
		}
	}
}
