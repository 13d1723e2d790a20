/*
 * main.c — the pagedkv command: dispatches to a subcommand.
 *
 *   pagedkv run   a continuous-batching serving workload on the engine
 *   pagedkv sim   eviction policies replayed on traces through the manager
 *
 * Each subcommand parses its own flags (getopt_long) and has --help.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include "pagedkv/pagedkv.h"

static const struct {
  const char *name;
  int (*fn)(int, char **);
  const char *what;
} commands[] = {
    {"run", cmd_run, "run a serving workload (continuous batching) on the paged KV cache and engine"},
    {"sim", cmd_sim, "replay a trace through the cache manager: eviction policies vs Belady's bound"},
};

static void usage(FILE *f) {
  fprintf(f,
          "Usage: pagedkv COMMAND [OPTIONS]\n"
          "\n"
          "Paged KV-cache workloads and eviction-policy simulation.\n"
          "\n"
          "Commands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-6s %s\n", commands[i].name, commands[i].what);
  fprintf(f,
          "\n"
          "  pagedkv COMMAND --help   options of a command\n"
          "  pagedkv --version        library version\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return CLI_EXIT_USAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    if (!strcmp(cmd, "help") && argc > 2) {
      char *sub[] = {argv[2], "--help", NULL};
      for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[2], commands[i].name)) return commands[i].fn(2, sub);
      return cli_usage_error(NULL, "unknown command '%s'", argv[2]);
    }
    usage(stdout);
    return 0;
  }
  if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
    printf("pagedkv %d.%d.%d\n", PKV_VERSION_MAJOR, PKV_VERSION_MINOR, PKV_VERSION_PATCH);
    return 0;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!strcmp(cmd, commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "pagedkv: unknown command '%s'\n\n", cmd);
  usage(stderr);
  return CLI_EXIT_USAGE;
}
