package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"

	"github.com/bindsync/bindsync/config"
	"github.com/bindsync/bindsync/internal/safetext"
)

// common holds the flags every command takes.
type common struct {
	logLevel string
	config   string
}

func newFlagSet(name string, stderr io.Writer, c *common, withConfig bool) *flag.FlagSet {
	fs := flag.NewFlagSet("bindsync "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.logLevel, "log-level", "", "log level: debug, info, warn, error (default from BINDSYNC_LOG_LEVEL, then the config, then info)")
	if withConfig {
		fs.StringVar(&c.config, "config", "", "configuration file (YAML)")
	}
	return fs
}

// parse parses flags; -h prints the usage and exits 0, a bad flag exits 2.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errSilent{exitOK}
		}
		return errSilent{exitUsage}
	}
	if fs.NArg() > 0 {
		// main prefixes every error with "bindsync: ", and fs.Name() is
		// "bindsync COMMAND": name the command alone, or the program is
		// named twice.
		cmd := strings.TrimPrefix(fs.Name(), "bindsync ")
		return usagef("%s: unexpected argument %q (flags only; see bindsync %s -h)", cmd, fs.Arg(0), cmd)
	}
	return nil
}

func loadConfig(c *common) (*config.Config, error) {
	return loadConfigWith(c, config.Options{})
}

// loadConfigWith is loadConfig for a command that uses only part of the
// configuration (see config.Options).
func loadConfigWith(c *common, opts config.Options) (*config.Config, error) {
	if c.config == "" {
		return nil, usagef("--config FILE is required")
	}
	cfg, err := config.LoadFileWith(c.config, opts)
	if err != nil {
		return nil, usageError{err}
	}
	return cfg, nil
}

// newLogger builds the zap logger: JSON when stderr is not a terminal (a
// pod), colourless console lines in a terminal, unless the config says.
// Whatever it writes is redacted with the secrets of cfg and escaped (see
// safetext.WrapCore).
func newLogger(c *common, cfg *config.Config, stderr io.Writer) (*zap.Logger, error) {
	level := "info"
	format := "auto"
	if cfg != nil {
		level, format = cfg.Log.Level, cfg.Log.Format
	}
	if env := os.Getenv("BINDSYNC_LOG_LEVEL"); env != "" {
		level = env
	}
	if c.logLevel != "" {
		level = c.logLevel
	}
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(strings.ToLower(level))); err != nil || lvl > zapcore.ErrorLevel {
		return nil, usagef("log level must be one of debug, info, warn, error (got %q)", level)
	}
	if format == "auto" {
		format = "json"
		if isTerminal(stderr) {
			format = "console"
		}
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "time"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	encCfg.EncodeDuration = zapcore.StringDurationEncoder
	var enc zapcore.Encoder
	if format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(stderr)), lvl)
	return zap.New(safetext.WrapCore(core, newRedactor(cfg))), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// logWarnings logs what cfg.Warnings finds, once at the start of a command.
func logWarnings(log *zap.Logger, cfg *config.Config) {
	for _, w := range cfg.Warnings() {
		log.Warn("configuration: " + w)
	}
}

func plural(n int64, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
