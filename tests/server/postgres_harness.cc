#include "tests/server/postgres_harness.h"

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace layerflow::server::testing {
namespace {

namespace fs = std::filesystem;

bool HasServerBinaries(const std::string& dir) {
  return access((dir + "/initdb").c_str(), X_OK) == 0 &&
         access((dir + "/postgres").c_str(), X_OK) == 0;
}

absl::StatusOr<std::string> FindBinDir() {
  if (const char* env = getenv("LAYERFLOW_PG_BINDIR"); env != nullptr && *env != '\0') {
    if (HasServerBinaries(env)) return std::string(env);
    return absl::FailedPreconditionError(
        absl::StrCat("LAYERFLOW_PG_BINDIR=", env, " has no initdb and postgres"));
  }
  // The Debian package puts them in /usr/lib/postgresql/<major>/bin: the
  // newest major first.
  std::vector<std::pair<int, std::string>> majors;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    int major = 0;
    if (absl::SimpleAtoi(entry.path().filename().string(), &major)) {
      majors.emplace_back(major, entry.path().string() + "/bin");
    }
  }
  std::sort(majors.rbegin(), majors.rend());
  std::vector<std::string> candidates;
  for (const auto& [major, dir] : majors) candidates.push_back(dir);
  candidates.push_back("/usr/local/bin");
  if (const char* path = getenv("PATH"); path != nullptr) {
    for (absl::string_view dir : absl::StrSplit(path, ':', absl::SkipEmpty())) {
      candidates.emplace_back(dir);
    }
  }
  for (const std::string& dir : candidates) {
    if (HasServerBinaries(dir)) return dir;
  }
  return absl::FailedPreconditionError(
      "PostgreSQL server binaries (initdb, postgres) not found in $LAYERFLOW_PG_BINDIR, "
      "/usr/lib/postgresql/*/bin, /usr/local/bin or $PATH; `scripts/bootstrap.sh deps` "
      "installs the Debian postgresql package");
}

// Who runs initdb and postgres: ourselves, or (as root) an unprivileged user.
struct Identity {
  bool drop = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

absl::StatusOr<Identity> ServerIdentity() {
  Identity id;
  if (geteuid() != 0) return id;
  const char* name = getenv("LAYERFLOW_PG_USER");
  if (name == nullptr || *name == '\0') name = "nobody";
  const passwd* pw = getpwnam(name);
  if (pw == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("running as root, and PostgreSQL refuses to: no user '", name,
                     "' to run it as (set LAYERFLOW_PG_USER)"));
  }
  id.drop = true;
  id.uid = pw->pw_uid;
  id.gid = pw->pw_gid;
  return id;
}

// fork + exec with stdout and stderr appended to `log`. Everything the
// child calls between fork and exec is async-signal-safe.
absl::StatusOr<pid_t> Spawn(const Identity& id, const std::vector<std::string>& args,
                            const std::string& log) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  if (pid == 0) {
    const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    const int in = open("/dev/null", O_RDONLY);
    if (out < 0 || in < 0) _exit(126);
    dup2(in, 0);
    dup2(out, 1);
    dup2(out, 2);
    if (id.drop) {
      if (setgroups(0, nullptr) != 0 || setgid(id.gid) != 0 || setuid(id.uid) != 0) _exit(125);
    }
    // A test that dies without its destructors still stops the server
    // (set after setuid, which clears it).
    prctl(PR_SET_PDEATHSIG, SIGINT);
    if (getppid() != parent) _exit(124);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

std::string Tail(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  return text.size() > 2000 ? text.substr(text.size() - 2000) : text;
}

// A port nothing listens on now (the kernel's choice for port 0).
absl::StatusOr<int> FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return absl::InternalError("bind 127.0.0.1:0");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

// Runs a spawned program to its end; INTERNAL with the log's tail unless it
// exits 0.
absl::Status Run(const Identity& id, const std::vector<std::string>& args, const std::string& log) {
  absl::StatusOr<pid_t> pid = Spawn(id, args, log);
  if (!pid.ok()) return pid.status();
  int status = 0;
  waitpid(*pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(args[0], " failed (status ", status, "): ", Tail(log)));
  }
  return absl::OkStatus();
}

absl::Status InitDb(const Identity& id, const std::string& bindir, const std::string& data,
                    const std::string& log) {
  return Run(id,
             {bindir + "/initdb", "-D", data, "-U", "lf", "--auth=trust", "-E", "UTF8",
              "--locale=C.UTF-8", "--no-sync", "--no-instructions"},
             log);
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostgresServer>> PostgresServer::Start() {
  std::unique_ptr<PostgresServer> server(new PostgresServer());
  absl::StatusOr<std::string> bindir = FindBinDir();
  if (!bindir.ok()) return bindir.status();
  server->bindir_ = *bindir;
  absl::StatusOr<Identity> id = ServerIdentity();
  if (!id.ok()) return id.status();
  // As root the folder must be reachable by the unprivileged user: /tmp,
  // whatever TMPDIR says.
  std::string base = id->drop ? "/tmp" : fs::temp_directory_path().string();
  std::string dir = base + "/lf_pg_XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", dir, ": ", strerror(errno)));
  }
  server->dir_ = dir;
  server->owner_ = getpid();
  if (id->drop && chown(dir.c_str(), id->uid, id->gid) != 0) {
    return absl::InternalError(absl::StrCat("chown ", dir, ": ", strerror(errno)));
  }
  const std::string log = dir + "/server.log";
  {
    // Created by us, writable by the server's user.
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT, 0666);
    if (fd >= 0) close(fd);
    if (id->drop) (void)chown(log.c_str(), id->uid, id->gid);
  }
  if (absl::Status s = InitDb(*id, server->bindir_, dir + "/data", log); !s.ok()) return s;
  // The port may be taken between choosing it and binding it: a few tries.
  for (int attempt = 0; attempt < 5; ++attempt) {
    absl::StatusOr<int> port = FreeLoopbackPort();
    if (!port.ok()) return port.status();
    absl::StatusOr<pid_t> pid =
        Spawn(*id,
              {server->bindir_ + "/postgres", "-D", dir + "/data", "-p", absl::StrCat(*port), "-k",
               dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c",
               "full_page_writes=off", "-c", "max_connections=60", "-c", "shared_buffers=32MB",
               "-c", "dynamic_shared_memory_type=mmap"},
              log);
    if (!pid.ok()) return pid.status();
    server->pid_ = *pid;
    server->port_ = *port;
    const std::string ping =
        absl::StrCat("host=127.0.0.1 port=", *port, " user=lf dbname=postgres connect_timeout=2");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    bool exited = false;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(*pid, &status, WNOHANG) == *pid) {
        exited = true;
        server->pid_ = -1;
        break;
      }
      if (PQping(ping.c_str()) == PQPING_OK) return server;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!exited) {
      return absl::DeadlineExceededError(
          absl::StrCat("postgres not ready on 127.0.0.1:", *port, " after 30 s: ", Tail(log)));
    }
    if (Tail(log).find("could not bind") == std::string::npos) {
      return absl::InternalError(absl::StrCat("postgres exited: ", Tail(log)));
    }
  }
  return absl::UnavailableError(absl::StrCat("postgres found no free port: ", Tail(log)));
}

PostgresServer::~PostgresServer() {
  // A forked child of the test (the crash tests) leaves the server alone.
  if (getpid() != owner_) return;
  if (pid_ > 0) {
    kill(pid_, SIGINT);  // fast shutdown: disconnects clients, then exits
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (waitpid(pid_, nullptr, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (!dir_.empty()) {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
}

std::string PostgresServer::Log() const {
  std::ifstream in(dir_ + "/server.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string PostgresServer::Url(const std::string& database) const {
  return absl::StrCat("postgresql://lf@127.0.0.1:", port_, "/", database);
}

absl::Status PostgresServer::CreateDatabase(const std::string& name) {
  return Query("postgres", absl::StrCat("CREATE DATABASE \"", name, "\"")).status();
}

absl::StatusOr<std::string> PostgresServer::Query(const std::string& database,
                                                  const std::string& sql) {
  PGconn* conn = PQconnectdb(Url(database).c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    absl::Status s = absl::UnavailableError(PQerrorMessage(conn));
    PQfinish(conn);
    return s;
  }
  PGresult* res = PQexec(conn, sql.c_str());
  const ExecStatusType status = PQresultStatus(res);
  absl::StatusOr<std::string> out;
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    out = absl::InternalError(absl::StrCat(PQresultErrorMessage(res), " (", sql, ")"));
  } else {
    out = PQntuples(res) > 0 && PQnfields(res) > 0 ? std::string(PQgetvalue(res, 0, 0)) : "";
  }
  PQclear(res);
  PQfinish(conn);
  return out;
}

absl::StatusOr<PostgresServer*> SharedPostgres() {
  static std::mutex mu;
  static std::unique_ptr<PostgresServer> server;  // stopped at exit
  static absl::Status error;
  std::lock_guard<std::mutex> lock(mu);
  if (server == nullptr && error.ok()) {
    absl::StatusOr<std::unique_ptr<PostgresServer>> started = PostgresServer::Start();
    if (started.ok()) {
      server = *std::move(started);
    } else {
      error = started.status();
    }
  }
  if (!error.ok()) return error;
  return server.get();
}

absl::StatusOr<std::string> PostgresUrlFor(const std::string& key) {
  static std::mutex mu;
  static std::map<std::string, std::string>* databases = new std::map<std::string, std::string>;
  absl::StatusOr<PostgresServer*> server = SharedPostgres();
  if (!server.ok()) return server.status();
  std::lock_guard<std::mutex> lock(mu);
  auto it = databases->find(key);
  if (it == databases->end()) {
    // The server is the process's own (ctest runs each test alone): its
    // first key takes the fresh cluster's empty `postgres` database, which
    // saves a CREATE DATABASE (a third of a test's start-up).
    std::string name = "postgres";
    if (!databases->empty()) {
      name = absl::StrCat("lf_test_", databases->size());
      if (absl::Status s = (*server)->CreateDatabase(name); !s.ok()) return s;
    }
    it = databases->emplace(key, name).first;
  }
  return (*server)->Url(it->second);
}

}  // namespace layerflow::server::testing
