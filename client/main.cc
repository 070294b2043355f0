// The `layerflow` CLI. Everything lives in client/cli.cc; this file only
// binds it to the process (streams, terminal, signals, embedded cluster).
#include <unistd.h>

#include <iostream>

#include "client/cli.h"
#ifdef LAYERFLOW_CLIENT_EMBEDDED
#include "client/embedded.h"
#endif

int main(int argc, char** argv) {
  layerflow::client::CliEnvironment env;
  env.out = &std::cout;
  env.err = &std::cerr;
  env.interactive_progress = isatty(STDERR_FILENO) != 0;
  env.handle_signals = true;
#ifdef LAYERFLOW_CLIENT_EMBEDDED
  env.start_embedded = layerflow::client::StartEmbeddedCluster;
#endif
  return layerflow::client::RunCli(argc, argv, env);
}
