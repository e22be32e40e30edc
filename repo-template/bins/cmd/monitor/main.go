// monitor serves, over HTTP, the output of the scripts in /etc/monitor.d:
// GET / runs them all, GET /NAME runs one. It is the NAS's status page.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

func main() {
	listen := flag.String("listen", ":80", "address to serve on")
	dir := flag.String("dir", "/etc/monitor.d", "directory of monitor scripts")
	flag.Parse()

	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		name := strings.Trim(r.URL.Path, "/")
		scripts, err := list(*dir)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if name != "" {
			if !contains(scripts, name) {
				http.NotFound(w, r)
				return
			}
			scripts = []string{name}
		}
		for _, s := range scripts {
			fmt.Fprintf(w, "## %s\n%s\n", s, runScript(filepath.Join(*dir, s)))
		}
	})
	log.Fatal(http.ListenAndServe(*listen, nil))
}

func list(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0 {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// runScript bounds each script so one hung check cannot hang the page.
func runScript(path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s(failed: %v)\n", out, err)
	}
	return string(out)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
