// Command rulecheck validates Prometheus alerting and recording rule files the way
// Prometheus loads them (rule groups, names, labels, templates and every PromQL
// expression), and PromQL expressions given with -expr. It builds only the parser
// packages of the Prometheus module, not the whole of promtool.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

type exprs []string

func (e *exprs) String() string     { return fmt.Sprint(*e) }
func (e *exprs) Set(v string) error { *e = append(*e, v); return nil }

func main() {
	var expressions exprs
	flag.Var(&expressions, "expr", "a PromQL expression to parse (repeatable)")
	flag.Parse()
	promql := parser.NewParser(parser.Options{})
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	failed := false
	for _, path := range flag.Args() {
		groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, promql, logger)
		if len(errs) > 0 {
			failed = true
			for _, err := range errs {
				fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			}
			continue
		}
		rules := 0
		for _, group := range groups.Groups {
			rules += len(group.Rules)
		}
		fmt.Printf("%s: %d rules found\n", path, rules)
	}
	for i, expr := range expressions {
		if _, err := promql.ParseExpr(expr); err != nil {
			failed = true
			fmt.Fprintf(os.Stderr, "expression %d: %v\n", i, err)
		}
	}
	if len(expressions) > 0 && !failed {
		fmt.Printf("%d expressions parse\n", len(expressions))
	}
	if failed {
		os.Exit(1)
	}
}
