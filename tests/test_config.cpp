// Config validation (errors name the option) and parameter counts against
// hand-derived figures for the SmolLM shapes (docs/CONFIG.md).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "launcher/options.h"
#include "model/params.h"

using namespace mor;
using ::testing::HasSubstr;

namespace {

ModelConfig smol(int D, int H, int KV, int F, int L, int nr, RouterKind r) {
  ModelConfig c;
  c.vocab_size = 49152;
  c.d_model = D;
  c.n_heads = H;
  c.n_kv_heads = KV;
  c.d_ff = F;
  c.n_layers = L;
  c.seq_len = 2048;
  c.n_recursions = nr;
  c.router = r;
  c.sharing = Sharing::MiddleCycle;
  return c;
}

std::string error_of(const ModelConfig& c) {
  try {
    c.validate();
  } catch (const ConfigError& e) {
    return e.option + " | " + e.what();
  }
  return "";
}

TEST(Config, ValidConfigsPass) {
  EXPECT_EQ(error_of(smol(576, 9, 3, 1536, 32, 3, RouterKind::Expert)), "");
  EXPECT_EQ(error_of(smol(960, 15, 5, 2560, 32, 3, RouterKind::Token)), "");
  EXPECT_EQ(error_of(smol(576, 9, 3, 1536, 30, 1, RouterKind::None)), "");
}

TEST(Config, ErrorsNameTheOption) {
  const ModelConfig ok = smol(576, 9, 3, 1536, 32, 3, RouterKind::Expert);
  ModelConfig c = ok;
  c.n_heads = 7;  // does not divide 576
  EXPECT_THAT(error_of(c), HasSubstr("model.n_heads | --model.n_heads: 7 does not divide model.d_model = 576"));
  c = ok;
  c.n_kv_heads = 2;
  EXPECT_THAT(error_of(c), HasSubstr("model.n_kv_heads"));
  c = ok;
  c.n_layers = 30;  // 28 is not divisible by 3
  EXPECT_THAT(error_of(c), HasSubstr("nearest valid layer counts are 29 and 32"));
  c = ok;
  c.capacity = {1.0, 0.5};
  EXPECT_THAT(error_of(c), HasSubstr("mor.capacity | --mor.capacity: has 2 values but mor.n_recursions = 3"));
  c = ok;
  c.capacity = {1.0, 0.25, 0.5};
  EXPECT_THAT(error_of(c), HasSubstr("non-increasing"));
  c = ok;
  c.capacity = {1.0, 1.5, 0.5};
  EXPECT_THAT(error_of(c), HasSubstr("outside (0, 1]"));
  c = ok;
  c.sharing = Sharing::MiddleSequence;
  EXPECT_THAT(error_of(c), HasSubstr("mor.router | --mor.router: needs sharing = cycle or middle_cycle"));
  c = ok;
  c.kv_mode = KvMode::Share;
  c.capacity = {0.5, 0.5, 0.25};
  EXPECT_THAT(error_of(c), HasSubstr("kv_mode = share needs capacity[0] = 1"));
  c = ok;
  c.router = RouterKind::None;
  c.capacity = {1, 1, 1};
  EXPECT_THAT(error_of(c), HasSubstr("only applies to mor.router = expert"));
  EXPECT_THROW(parse_sharing("middle"), ConfigError);
  EXPECT_THROW(parse_router("experts"), ConfigError);
}

TEST(Config, ExpertCapacityTopK) {
  const ModelConfig c = smol(576, 9, 3, 1536, 32, 3, RouterKind::Expert);
  EXPECT_EQ(c.expert_k(0), 2048);  // k_r = floor(c_r T) (docs/MODEL.md): 2048, 1365, 682
  EXPECT_EQ(c.expert_k(1), 1365);
  EXPECT_EQ(c.expert_k(2), 682);
  const ModelConfig c4 = smol(960, 15, 5, 2560, 34, 4, RouterKind::Expert);
  EXPECT_EQ(c4.expert_k(1), 1536);
  EXPECT_EQ(c4.expert_k(3), 512);
}

TEST(ParamCount, SmolLMShapes) {
  // 135M: 30 layers x 3,540,096 = 106.2M non-embedding (paper: 106M), 28.3M embedding.
  ParamLayout v135(smol(576, 9, 3, 1536, 30, 1, RouterKind::None));
  EXPECT_EQ(v135.count_embedding(), 49152LL * 576);
  EXPECT_EQ(v135.total - v135.count_embedding(), 30LL * 3540096 + 576);
  // 360M: 9,830,400 matrix + 1,920 norm weights per layer; MoR-3 keeps 12 unique layers (118M).
  ParamLayout v360(smol(960, 15, 5, 2560, 32, 1, RouterKind::None));
  EXPECT_EQ(v360.total - v360.count_embedding() - 960, 32LL * 9832320);
  const ModelConfig m = smol(960, 15, 5, 2560, 32, 3, RouterKind::Expert);
  ParamLayout m360(m);
  EXPECT_EQ(m360.block_size, 10);
  EXPECT_EQ(m360.count_shared(), 10LL * 9832320);
  EXPECT_EQ(m360.count_unique_layers(), 2LL * 9832320);
  EXPECT_EQ(m360.count_other(), 960 + 3 * 960);  // final norm + 3 expert routers
  EXPECT_EQ(m360.total, analytic_param_count(m));
  EXPECT_EQ(m360.total, m360.count_embedding() + m360.count_shared() + m360.count_unique_layers() + m360.count_other());
}

TEST(ParamCount, NamesFollowHuggingFace) {
  ModelConfig c = smol(64, 4, 2, 96, 5, 3, RouterKind::Token);
  c.vocab_size = 100;
  ParamLayout lay(c);
  EXPECT_NE(lay.find("model.embed_tokens.weight"), nullptr);
  EXPECT_NE(lay.find("model.layers.0.self_attn.q_proj.weight"), nullptr);
  EXPECT_NE(lay.find("model.shared_layers.0.mlp.down_proj.weight"), nullptr);
  EXPECT_NE(lay.find("model.layers.4.post_attention_layernorm.weight"), nullptr);
  EXPECT_NE(lay.find("model.router.weight"), nullptr);
  EXPECT_EQ(lay.find("model.shared_layers.1.mlp.down_proj.weight"), nullptr);  // B = 1
  c.n_recursions = 1;
  c.router = RouterKind::None;
  ParamLayout van(c);
  EXPECT_NE(van.find("model.layers.2.self_attn.k_proj.weight"), nullptr);  // vanilla: plain HF names
  EXPECT_EQ(van.find("model.shared_layers.0.mlp.down_proj.weight"), nullptr);
}

TEST(Options, IniFileAndErrors) {
  const std::string path = ::testing::TempDir() + "/cfg_test.ini";
  {
    std::ofstream f(path);
    f << "[model]\nvocab_size = 100\nd_model = 32\nn_heads = 4\nn_kv_heads = 2\nd_ff = 48\nn_layers = 8\nseq_len = 16\n"
         "[mor]\nsharing = middle_cycle\nn_recursions = 3\nrouter = expert\ncapacity = 1, 0.5, 0.25\n";
  }
  RunConfig rc = load_config_file(path);
  EXPECT_EQ(rc.model.d_model, 32);
  EXPECT_EQ(rc.model.router, RouterKind::Expert);
  ASSERT_EQ(rc.model.capacity.size(), 3u);
  EXPECT_DOUBLE_EQ(rc.model.capacity[2], 0.25);
  {
    std::ofstream f(path);
    f << "[model]\nd_modle = 32\n";
  }
  try {
    load_config_file(path);
    FAIL() << "unknown key accepted";
  } catch (const ConfigError& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("d_modle"));
  }
  {
    std::ofstream f(path);
    f << "[mor]\ncapacity = 1, x\n";
  }
  EXPECT_THROW(load_config_file(path), ConfigError);
  EXPECT_THROW(load_config_file(path + ".missing"), ConfigError);
}

std::string load_error(const std::string& path) {
  try {
    load_config_file(path);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Options, ConfigDirectoryIsAnError) {
  const std::string dir = ::testing::TempDir();
  EXPECT_EQ(load_error(dir), "--config: '" + dir + "' is a directory, not a config file");
}

TEST(Options, UnknownKeyInFileSuggestsTheName) {
  const std::string path = ::testing::TempDir() + "/cfg_typo.ini";
  std::ofstream(path) << "[train]\nstep = 10\n";
  EXPECT_EQ(load_error(path),
            "config file '" + path + "': unrecognised option 'train.step'; did you mean 'steps' (in [train])?");
}

TEST(Options, LongValuesAreCutInMessages) {
  const std::string path = ::testing::TempDir() + "/cfg_long.ini";
  std::ofstream(path) << "[model]\nd_model = " << std::string(10'000'000, '7') << "x\n";
  std::string msg = load_error(path);
  EXPECT_LT(msg.size(), 300u) << msg.substr(0, 300);
  EXPECT_THAT(msg, HasSubstr("'" + std::string(80, '7') + "... (10000001 bytes)'"));
  EXPECT_THAT(msg, HasSubstr("for option 'model.d_model' is invalid"));
  std::ofstream(path) << "[mor]\nsharing = " << std::string(5'000'000, 'q') << "\n";
  msg = load_error(path);
  EXPECT_LT(msg.size(), 300u) << msg.substr(0, 300);
  EXPECT_THAT(msg, HasSubstr("... (5000000 bytes)"));
  std::ofstream(path) << std::string(3'000'000, 'z') << "\n";  // not a key = value line
  msg = load_error(path);
  EXPECT_LT(msg.size(), 400u) << msg.substr(0, 400);
  EXPECT_THAT(msg, HasSubstr("invalid line '" + std::string(80, 'z') + "... (3000000 bytes)'"));
}

TEST(Options, ClipHelpers) {
  EXPECT_EQ(clip_value("short"), "short");
  EXPECT_EQ(clip_value(std::string(81, 'a')), std::string(80, 'a') + "... (81 bytes)");
  EXPECT_EQ(clip_value(std::string(79, 'a') + "\xc3\xa9xx"),
            std::string(79, 'a') + "... (83 bytes)");  // no half a UTF-8 character
  EXPECT_EQ(clip_message("bad value 'abc' for 'x'"), "bad value 'abc' for 'x'");
  EXPECT_EQ(clip_message("tab\there"), "tab?here");
  const std::string cut = clip_message("unknown value '" + std::string(1000, 'v') + "' (a | b)");
  EXPECT_EQ(cut, "unknown value '" + std::string(80, 'v') + "... (1000 bytes)' (a | b)");
  EXPECT_LE(clip_message(std::string(100000, '\'')).size(), 1100u);  // quotes everywhere: still bounded
}

TEST(Options, SuggestsNearestNames) {
  const std::vector<std::string> known = {"train.steps", "train.seed", "optim.lr",   "model.d_model",
                                          "model.d_ff",  "config",     "save-every", "mor.router"};
  using ::testing::ElementsAre;
  EXPECT_THAT(suggest_options("--train.step", known), ElementsAre("train.steps"));
  EXPECT_THAT(suggest_options("--train.step=10", known), ElementsAre("train.steps"));
  EXPECT_THAT(suggest_options("--train.lr", known), ElementsAre("optim.lr"));  // same key, other section
  EXPECT_THAT(suggest_options("steps", known), ElementsAre("train.steps"));
  EXPECT_THAT(suggest_options("model.d_modle", known), ElementsAre("model.d_model"));  // transposition: 1
  EXPECT_THAT(suggest_options("--conf", known), ElementsAre("config"));
  EXPECT_THAT(suggest_options("--train.ste", known), ElementsAre("train.steps", "train.seed"));  // a tie: both
  EXPECT_TRUE(suggest_options("--learning_rate", known).empty());
  EXPECT_TRUE(suggest_options("--", known).empty());
}

}  // namespace
