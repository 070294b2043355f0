// A model of any architecture from a checkpoint folder: config.json
// (worker/model/config_json.h) plus the weights, in this order of preference:
//   model.safetensors | model.safetensors.index.json + shards  (memory-mapped)
//   pytorch_model.bin | pytorch_model.bin.index.json + shards  (torch.save
//     zip archives, read with LibTorch's unpickler; the original Mamba and
//     Mamba-2 releases ship only these)
//
// Mapping (llama.cpp style, one name to one parameter): checkpoint names are
// the model's ParameterMap names, with the spellings other writers use
// mapped onto them:
//   gpt_neox  lm_head.weight -> embed_out.weight (transformers 5 re-saves)
//   mamba*    backbone.embedding.weight -> backbone.embeddings.weight
//             (mamba_ssm's naming, as HF MambaModel.load_hook)
// With tied embeddings (tie_word_embeddings / mamba_ssm's tie_embeddings)
// and no head in the file, the head is a copy of the input embedding.
// Non-parameter buffers that older writers saved (attention masks, rotary
// inv_freq) are skipped; any other tensor the model lacks is an error, so a
// checkpoint of another architecture never loads silently.
#ifndef LAYERFLOW_WORKER_MODEL_MODEL_CHECKPOINT_H_
#define LAYERFLOW_WORKER_MODEL_MODEL_CHECKPOINT_H_

#include <memory>
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "common/confined_file.h"
#include "worker/model/checkpoint.h"
#include "worker/model/language_model.h"

namespace layerflow::worker {

// Loads <dir> onto `device` in `dtype` (F32 / F16 / BF16 in the file,
// converted by copy_: a half checkpoint loaded as fp32 holds its values
// exactly). Errors name the file and the tensor or key:
//   NOT_FOUND         no weights file, or a parameter missing from it
//   INVALID_ARGUMENT  a wrong shape (expected and actual), an unsupported
//                     dtype, an unexpected tensor, a bad config, a corrupt
//                     or truncated file
//   INTERNAL          a LibTorch failure while copying
//   PERMISSION_DENIED a shard name that a symbolic link leads outside the
//                     folder's bound (common/confined_file.h)
// A job's checkpoint (ModelSource::folder): every file through `dir`, sized
// by `limits`; messages name files relative to the folder.
absl::StatusOr<std::unique_ptr<LanguageModel>> LoadModelCheckpoint(const ConfinedDir& dir,
                                                                   c10::ScalarType dtype,
                                                                   c10::Device device,
                                                                   const ModelFileLimits& limits);
// A folder this process trusts (tests, tools): confined to itself, default
// limits; messages name files as <dir>/<file>.
absl::StatusOr<std::unique_ptr<LanguageModel>> LoadModelCheckpoint(const std::string& dir,
                                                                   c10::ScalarType dtype,
                                                                   c10::Device device);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_MODEL_CHECKPOINT_H_
