#include "common/train_spec.h"

namespace layerflow {

catalog::TrainSettings TrainSettingsOf(const layerflow::v1::TrainSpec& t) {
  catalog::TrainSettings s;
  s.task = t.task();
  s.vocab = t.vocab();
  s.length = t.length();
  s.pairs = t.pairs();
  s.alpha = t.alpha();
  s.layers = t.layers();
  s.width = t.width();
  s.heads = t.heads();
  s.state_size = t.state_size();
  s.steps = t.steps();
  s.batch = t.batch();
  s.lr = t.lr();
  s.warmup = t.warmup();
  s.weight_decay = t.weight_decay();
  s.clip = t.clip();
  s.target_accuracy = t.target_accuracy();
  s.eval_every = t.eval_every();
  s.save_every = t.save_every();
  s.eval_examples = t.eval_examples();
  s.curriculum = t.curriculum();
  s.penalty = t.penalty();
  s.penalty_weight = t.penalty_weight();
  s.penalty_layers.assign(t.penalty_layers().begin(), t.penalty_layers().end());
  s.penalty_series = t.penalty_series();
  return s;
}

layerflow::v1::TrainSpec TrainSpecOf(const catalog::TrainSettings& s) {
  layerflow::v1::TrainSpec t;
  t.set_task(s.task);
  t.set_vocab(s.vocab);
  t.set_length(s.length);
  t.set_pairs(s.pairs);
  t.set_alpha(s.alpha);
  t.set_layers(s.layers);
  t.set_width(s.width);
  t.set_heads(s.heads);
  t.set_state_size(s.state_size);
  t.set_steps(s.steps);
  t.set_batch(s.batch);
  t.set_lr(s.lr);
  t.set_warmup(s.warmup);
  t.set_weight_decay(s.weight_decay);
  t.set_clip(s.clip);
  t.set_target_accuracy(s.target_accuracy);
  t.set_eval_every(s.eval_every);
  t.set_save_every(s.save_every);
  t.set_eval_examples(s.eval_examples);
  t.set_curriculum(s.curriculum);
  t.set_penalty(s.penalty);
  t.set_penalty_weight(s.penalty_weight);
  for (int32_t layer : s.penalty_layers) t.add_penalty_layers(layer);
  t.set_penalty_series(s.penalty_series);
  return t;
}

}  // namespace layerflow
