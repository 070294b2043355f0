// The worker's spelling of the plain model configs, presets and init
// schemes, which live in catalog/model_config.h (shared with the server and
// the client): the same types and functions, named in layerflow::worker so
// that the model code reads `ModelConfig`, `FindModelPreset`, ...
#ifndef LAYERFLOW_WORKER_MODEL_MODEL_CONFIG_H_
#define LAYERFLOW_WORKER_MODEL_MODEL_CONFIG_H_

#include "catalog/model_config.h"

namespace layerflow::worker {

using catalog::FindModelPreset;
using catalog::GptNeoConfig;
using catalog::GptNeoXConfig;
using catalog::InitScheme;
using catalog::KnownArchitectures;
using catalog::Mamba2Config;
using catalog::MambaConfig;
using catalog::ModelConfig;
using catalog::ModelPreset;
using catalog::ModelPresets;
using catalog::ParseInitScheme;

}  // namespace layerflow::worker

#endif  // LAYERFLOW_WORKER_MODEL_MODEL_CONFIG_H_
