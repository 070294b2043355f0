// The artifact store: checksums against published vectors, the upload
// protocol's checks (offset, CRC-32C, size, SHA-256, lease), quota and
// per-artifact limits, names, listing and reopening.
#include "server/artifacts/artifact_store.h"

#include <sys/stat.h>

#include <fstream>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "tests/server/test_util.h"

namespace layerflow::artifacts {
namespace {

namespace v1 = ::layerflow::v1;
using ::layerflow::server::testing::TempDir;
using ::layerflow::testing::StatusIs;

TEST(Checksum, Crc32cMatchesPublishedVectors) {
  // RFC 3720 (iSCSI) B.4 and the usual check value.
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string ascending;
  for (int i = 0; i < 32; ++i) ascending += static_cast<char>(i);
  EXPECT_EQ(Crc32c(ascending), 0x46DD794Eu);
  // Incremental equals one-shot, at every split (exercises the 4-byte path).
  const std::string text = "The quick brown fox jumps over the lazy dog";
  for (size_t split = 0; split <= text.size(); ++split) {
    EXPECT_EQ(Crc32c(text.substr(split), Crc32c(text.substr(0, split))), Crc32c(text));
  }
}

TEST(Checksum, Sha256MatchesPublishedVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 sha;
  sha.Update("ab");
  sha.Update("c");
  EXPECT_EQ(sha.HexDigest(), Sha256Hex("abc"));
}

TEST(ValidateArtifactName, AcceptsRelativePathsAndRejectsEscapes) {
  EXPECT_TRUE(ValidateArtifactName("sw-1-0/features/000003").ok());
  EXPECT_TRUE(ValidateArtifactName("a.b_c-d").ok());
  for (const char* bad : {"", "/etc/passwd", "../x", "a/../../x", "a//b", "a/", "a/./b", ".meta/x",
                          "a/.hidden", "a b", "a\\b"}) {
    EXPECT_THAT(ValidateArtifactName(bad, "chunk.name"),
                StatusIs(absl::StatusCode::kInvalidArgument, "chunk.name: "))
        << bad;
  }
  EXPECT_THAT(ValidateArtifactName(std::string(513, 'a')),
              StatusIs(absl::StatusCode::kInvalidArgument, "longer than 512"));
}

class ArtifactStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }

  void Open(int64_t quota = 1000, int64_t max = 600) {
    store_.reset();
    ArtifactStoreOptions options;
    options.root = dir_.File("artifacts");
    options.quota_bytes = quota;
    options.max_artifact_bytes = max;
    options.on_bytes_stored = [this](int64_t bytes) { published_ = bytes; };
    auto store = ArtifactStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  // The messages of an upload of `data` in pieces of `piece` bytes.
  static std::vector<v1::ArtifactChunk> Messages(const std::string& name, const std::string& data,
                                                 size_t piece, const std::string& lease = "L") {
    std::vector<v1::ArtifactChunk> out;
    size_t offset = 0;
    do {
      v1::ArtifactChunk& c = out.emplace_back();
      if (offset == 0) {
        c.set_name(name);
        c.set_job_id("job");
        c.set_lease_id(lease);
        c.set_total_bytes(static_cast<int64_t>(data.size()));
      }
      const std::string part = data.substr(offset, piece);
      c.set_offset(static_cast<int64_t>(offset));
      c.set_data(part);
      c.set_crc32c(Crc32c(part));
      offset += part.size();
    } while (offset < data.size());
    out.back().set_sha256(Sha256Hex(data));
    return out;
  }

  UploadSession Session() {
    return UploadSession(store_.get(), [this](const std::string& job, const std::string& lease) {
      ++lease_checks_;
      if (job == "job" && lease == live_lease_) return absl::OkStatus();
      return absl::AbortedError("lease " + lease + " of job " + job + " lapsed");
    });
  }

  absl::StatusOr<v1::ArtifactInfo> UploadAll(const std::vector<v1::ArtifactChunk>& messages) {
    UploadSession session = Session();
    for (const auto& m : messages) {
      if (absl::Status s = session.OnChunk(m); !s.ok()) return s;
    }
    return session.Finish();
  }

  std::string Download(const std::string& name, int64_t chunk_bytes, int* messages) {
    auto session = DownloadSession::Open(*store_, name, chunk_bytes);
    EXPECT_TRUE(session.ok()) << session.status();
    if (!session.ok()) return "";
    std::string data;
    v1::ArtifactChunk chunk;
    *messages = 0;
    while (true) {
      absl::StatusOr<bool> more = (*session)->Next(&chunk);
      EXPECT_TRUE(more.ok()) << more.status();
      if (!more.ok() || !*more) break;
      if (*messages == 0) {
        EXPECT_EQ(chunk.name(), name);
        EXPECT_EQ(chunk.sha256().size(), 64u);
      }
      EXPECT_EQ(chunk.offset(), static_cast<int64_t>(data.size()));
      EXPECT_EQ(chunk.crc32c(), Crc32c(chunk.data()));
      data += chunk.data();
      ++*messages;
    }
    return data;
  }

  bool TempDirEmpty() {
    int files = 0;
    std::string cmd;
    for (const auto& entry : std::filesystem::directory_iterator(dir_.File("artifacts/.tmp"))) {
      (void)entry;
      ++files;
    }
    return files == 0;
  }

  TempDir dir_;
  std::unique_ptr<ArtifactStore> store_;
  int64_t published_ = -1;
  std::string live_lease_ = "L";
  int lease_checks_ = 0;
};

TEST_F(ArtifactStoreTest, UploadListDownloadRoundTrip) {
  EXPECT_EQ(published_, 0);
  std::string data;
  for (int i = 0; i < 500; ++i) data += static_cast<char>(i * 7);
  LF_ASSERT_OK_AND_ASSIGN(auto info, UploadAll(Messages("j/features/000001", data, 64)));
  EXPECT_EQ(info.name(), "j/features/000001");
  EXPECT_EQ(info.bytes(), 500);
  EXPECT_EQ(info.sha256(), Sha256Hex(data));
  EXPECT_EQ(lease_checks_, 2);  // the first message and before publishing
  EXPECT_EQ(store_->bytes_stored(), 500);
  EXPECT_EQ(published_, 500);
  LF_ASSERT_OK_AND_ASSIGN(auto empty, UploadAll(Messages("j/features/000000", "", 64)));
  EXPECT_EQ(empty.bytes(), 0);
  LF_ASSERT_OK(UploadAll(Messages("k/other", "x", 64)).status());

  const auto listed = store_->List("j/features/");
  ASSERT_EQ(listed.size(), 2u);
  EXPECT_EQ(listed[0].name, "j/features/000000");  // sorted by name
  EXPECT_EQ(listed[1].name, "j/features/000001");
  EXPECT_EQ(listed[1].sha256, Sha256Hex(data));
  EXPECT_EQ(store_->List("").size(), 3u);

  int messages = 0;
  EXPECT_EQ(Download("j/features/000001", 200, &messages), data);
  EXPECT_EQ(messages, 3);  // 200 + 200 + 100
  EXPECT_EQ(Download("j/features/000000", 200, &messages), "");
  EXPECT_EQ(messages, 1);  // one message, no data
  EXPECT_THAT(DownloadSession::Open(*store_, "j/features/000009").status(),
              StatusIs(absl::StatusCode::kNotFound, "no artifact 'j/features/000009'"));
  EXPECT_THAT(DownloadSession::Open(*store_, "../x").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "'..'"));
  // The bytes are a plain file under the root.
  std::ifstream file(dir_.File("artifacts/j/features/000001"), std::ios::binary);
  std::string on_disk((std::istreambuf_iterator<char>(file)), {});
  EXPECT_EQ(on_disk, data);
  EXPECT_TRUE(TempDirEmpty());

  // Reopening indexes what is there.
  Open();
  EXPECT_EQ(store_->bytes_stored(), 501);
  EXPECT_EQ(published_, 501);
  LF_ASSERT_OK_AND_ASSIGN(auto stat, store_->Stat("j/features/000001"));
  EXPECT_EQ(stat.sha256, Sha256Hex(data));
}

TEST_F(ArtifactStoreTest, BadChecksumIsDataLossAndNothingIsPublished) {
  auto messages = Messages("a", std::string(100, 'x'), 30);
  messages[2].set_crc32c(messages[2].crc32c() ^ 1);
  EXPECT_THAT(UploadAll(messages).status(), StatusIs(absl::StatusCode::kDataLoss, "chunk.crc32c:"));
  messages = Messages("a", std::string(100, 'x'), 30);
  messages.back().set_sha256(Sha256Hex("something else"));
  EXPECT_THAT(UploadAll(messages).status(), StatusIs(absl::StatusCode::kDataLoss, "chunk.sha256:"));
  // A stream that ends early: missing bytes.
  messages = Messages("a", std::string(100, 'x'), 30);
  const std::string sha = messages.back().sha256();
  messages.pop_back();
  messages.back().set_sha256(sha);
  EXPECT_THAT(UploadAll(messages).status(),
              StatusIs(absl::StatusCode::kDataLoss, "received 90 of 100 bytes"));
  EXPECT_THAT(store_->Stat("a").status(), StatusIs(absl::StatusCode::kNotFound, "a"));
  EXPECT_EQ(store_->bytes_stored(), 0);
  EXPECT_TRUE(TempDirEmpty());
  // Reservations were released: the full quota is available again.
  LF_ASSERT_OK(UploadAll(Messages("b", std::string(600, 'y'), 100)).status());
  LF_ASSERT_OK(UploadAll(Messages("c", std::string(400, 'y'), 100)).status());
}

TEST_F(ArtifactStoreTest, WrongOffsetOrSizeOrFieldsAreInvalidArgument) {
  auto messages = Messages("a", std::string(100, 'x'), 30);
  messages[1].set_offset(31);
  EXPECT_THAT(UploadAll(messages).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.offset: 31 but 30 bytes of a were received"));
  messages = Messages("a", std::string(100, 'x'), 30);
  messages[0].set_total_bytes(50);
  EXPECT_THAT(UploadAll(messages).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "run past total_bytes 50"));
  messages = Messages("a", std::string(100, 'x'), 30);
  messages[1].set_name("b");
  EXPECT_THAT(UploadAll(messages).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "chunk.name: 'b' differs from the first message's 'a'"));
  messages = Messages("a", std::string(100, 'x'), 30);
  messages.back().clear_sha256();
  EXPECT_THAT(UploadAll(messages).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "chunk.sha256: required"));
  messages = Messages("/abs", "x", 30);
  EXPECT_THAT(UploadAll(messages).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "absolute path"));
  messages = Messages("a", "x", 30);
  messages[0].set_total_bytes(-1);
  EXPECT_THAT(UploadAll(messages).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "chunk.total_bytes: -1"));
  EXPECT_THAT(UploadAll({}).status(), StatusIs(absl::StatusCode::kInvalidArgument, "empty upload"));
  EXPECT_TRUE(TempDirEmpty());
}

TEST_F(ArtifactStoreTest, UploadNeedsALiveLeaseAtStartAndAtTheEnd) {
  auto messages = Messages("a", std::string(100, 'x'), 30, "stale");
  EXPECT_THAT(UploadAll(messages).status(),
              StatusIs(absl::StatusCode::kAborted, "lease stale of job job lapsed"));
  messages = Messages("a", std::string(100, 'x'), 30);
  messages[0].clear_lease_id();
  EXPECT_THAT(UploadAll(messages).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "chunk.lease_id: required"));
  // The lease lapses while the bytes stream: nothing is published.
  messages = Messages("a", std::string(100, 'x'), 30);
  UploadSession session = Session();
  for (const auto& m : messages) LF_ASSERT_OK(session.OnChunk(m));
  live_lease_ = "L2";
  EXPECT_THAT(session.Finish().status(), StatusIs(absl::StatusCode::kAborted, "lapsed"));
  EXPECT_THAT(store_->Stat("a").status(), StatusIs(absl::StatusCode::kNotFound, ""));
}

TEST_F(ArtifactStoreTest, QuotaAndPerArtifactLimitAreResourceExhausted) {
  EXPECT_THAT(UploadAll(Messages("big", std::string(601, 'x'), 300)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "601 bytes exceed the per-artifact limit of 600"));
  LF_ASSERT_OK(UploadAll(Messages("a", std::string(600, 'x'), 300)).status());
  // An upload in progress holds its bytes against the quota.
  UploadSession open = Session();
  auto pending = Messages("b", std::string(300, 'x'), 300);
  LF_ASSERT_OK(open.OnChunk(pending[0]));
  EXPECT_THAT(UploadAll(Messages("c", std::string(101, 'x'), 300)).status(),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       "would exceed the quota of 1000 bytes (600 stored, 300 being "
                       "uploaded"));
  LF_ASSERT_OK(UploadAll(Messages("c", std::string(100, 'x'), 300)).status());
  LF_ASSERT_OK(open.Finish().status());
  EXPECT_EQ(store_->bytes_stored(), 1000);
  // Replacing an artifact counts only the difference.
  LF_ASSERT_OK(UploadAll(Messages("a", std::string(500, 'z'), 300)).status());
  EXPECT_EQ(store_->bytes_stored(), 900);
  EXPECT_EQ(published_, 900);
  int messages = 0;
  EXPECT_EQ(Download("a", 1 << 20, &messages), std::string(500, 'z'));
  // Limits of 0 mean unlimited.
  Open(0, 0);
  LF_ASSERT_OK(UploadAll(Messages("huge", std::string(5000, 'h'), 1000)).status());
}

}  // namespace
}  // namespace layerflow::artifacts
