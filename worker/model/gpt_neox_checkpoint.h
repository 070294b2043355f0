// A GPT-NeoX model from a Hugging Face checkpoint folder (config.json +
// safetensors; worker/model/checkpoint.h reads them without LibTorch).
//
// Mapping (llama.cpp style, one name to one parameter): the checkpoint's
// tensor names are the model's ParameterMap names, except the output head,
// which is `embed_out.weight` in GPT-NeoX checkpoints and `lm_head.weight`
// in some re-saved ones (transformers 5 renames it on load); either is taken.
// With tie_word_embeddings: true in config.json and no head in the file, the
// head is a copy of gpt_neox.embed_in.weight.
// Known non-parameter buffers that older transformers saved
// (`*.attention.bias`, `*.attention.masked_bias`, `*rotary_emb.inv_freq`)
// are skipped; any other tensor the model does not have is an error, so a
// checkpoint of another architecture never loads silently.
#ifndef LAYERFLOW_WORKER_MODEL_GPT_NEOX_CHECKPOINT_H_
#define LAYERFLOW_WORKER_MODEL_GPT_NEOX_CHECKPOINT_H_

#include <memory>
#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "worker/model/gpt_neox.h"

namespace layerflow::worker {

// Reads <dir>/config.json and the safetensors weights into a model on
// `device` in `dtype` (F32/F16/BF16 in the file, converted by copy_: an F16
// or BF16 checkpoint loaded as fp32 holds its values exactly). Errors name
// the file and the tensor:
//   NOT_FOUND         a parameter missing from the checkpoint, or no weights
//   INVALID_ARGUMENT  a wrong shape (expected and actual), an unsupported
//                     dtype, an unexpected tensor, a bad config or file
//   INTERNAL          a LibTorch failure while copying
absl::StatusOr<std::unique_ptr<GptNeoXModel>> LoadGptNeoXCheckpoint(
    const std::string& dir, c10::ScalarType dtype, c10::Device device);

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_GPT_NEOX_CHECKPOINT_H_
