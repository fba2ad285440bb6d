package main

// Shell completion. The scripts ask fleetctl itself what may come next ("fleetctl
// __complete WORDS..."), so a new command or flag completes without touching them.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
)

func init() {
	register(
		command{name: "completion", args: "bash|zsh", summary: "print a shell completion script (source <(fleetctl completion bash))", local: true, run: runCompletion},
		command{name: "__complete", args: "WORDS...", summary: "what may follow WORDS (used by the completion scripts)", local: true, run: runComplete},
	)
}

const bashCompletion = `# fleetctl completion for bash: source <(fleetctl completion bash)
_fleetctl() {
    local cur words
    cur="${COMP_WORDS[COMP_CWORD]}"
    words=("${COMP_WORDS[@]:1:COMP_CWORD-1}")
    COMPREPLY=($(compgen -W "$(fleetctl __complete "${words[@]}" 2>/dev/null)" -- "$cur"))
}
complete -o default -F _fleetctl fleetctl
`

const zshCompletion = `#compdef fleetctl
# fleetctl completion for zsh: source <(fleetctl completion zsh)
_fleetctl() {
    local -a candidates
    candidates=(${(f)"$(fleetctl __complete ${words[2,CURRENT-1]} 2>/dev/null)"})
    compadd -- $candidates
}
compdef _fleetctl fleetctl
`

func runCompletion(ctx context.Context, e *env, args []string) error {
	pos, err := e.noFlags(args, 1, 1)
	if err != nil {
		if e.listing != nil {
			fmt.Fprintln(e.listing, "bash\nzsh")
		}
		return err
	}
	switch pos[0] {
	case "bash":
		_, err = fmt.Fprint(e.out(), bashCompletion)
	case "zsh":
		_, err = fmt.Fprint(e.out(), zshCompletion)
	default:
		return usageErr("no completion for %q (bash or zsh)", pos[0])
	}
	return err
}

// runComplete prints the words that may follow args: command names first, then the
// command's subcommands and flags, and the global flags everywhere.
func runComplete(ctx context.Context, e *env, args []string) error {
	var words []string // what was typed, global flags and their values left out
	_, words = splitGlobals(e.gfs, args)
	globalFlags := func() {
		e.gfs.VisitAll(func(f *flag.Flag) {
			if len(f.Name) == 1 {
				fmt.Fprintf(e.out(), "-%s\n", f.Name)
			} else {
				fmt.Fprintf(e.out(), "--%s\n", f.Name)
			}
		})
	}
	if len(words) == 0 {
		for _, n := range sortedNames() {
			fmt.Fprintln(e.out(), n)
		}
		globalFlags()
		return nil
	}
	if words[0] == "help" {
		for _, n := range sortedNames() {
			fmt.Fprintln(e.out(), n)
		}
		return nil
	}
	cmd, ok := commands[words[0]]
	if !ok || strings.HasPrefix(words[0], "__") {
		return nil
	}
	ce := &env{cli: e.cli, name: cmd.name, format: e.format, globals: e.globals, gfs: e.gfs, listing: e.out(), helpTo: e.stderr}
	err := cmd.run(ctx, ce, words[1:])
	globalFlags()
	if err != nil && !errors.Is(err, flag.ErrHelp) && !errors.Is(err, errUsage) {
		return err
	}
	return nil
}
