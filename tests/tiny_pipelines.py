"""Tiny random diffusers pipelines saved in the diffusers layout, built offline (test helper).

``save_tiny_hunyuan_pipeline(root)`` writes a whole ``HunyuanVideoPipeline`` folder::

    root/model_index.json
    root/transformer/     tiny HunyuanVideoTransformer3DModel (tests/convert/tiny_hunyuan.py)
    root/vae/             tiny AutoencoderKLHunyuanVideo (codecs.TINY_HUNYUAN_CONFIG, 4 channels)
    root/text_encoder/    tiny LlamaModel (hidden 16 = the transformer's text_embed_dim)
    root/tokenizer/       byte-level BPE in Llama 3's style, with the prompt template's special
                          tokens (<|start_header_id|>, <|end_header_id|>, <|eot_id|>, BOS)
    root/text_encoder_2/  tiny CLIPTextModel (hidden 8 = the transformer's pooled_projection_dim)
    root/tokenizer_2/     a CLIP tokenizer (BPE with ``</w>`` word ends)
    root/scheduler/       FlowMatchEulerDiscreteScheduler, shift 7.0 (HunyuanVideo's)

The tokenizers are trained locally with the ``tokenizers`` library on a few sentences and the
prompt template (so ``{}`` and ``\\n\\n`` are one token each, as in Llama 3): no hub download.
As in the real checkpoint (hunyuanvideo-community/HunyuanVideo), ``model_index.json`` and
``tokenizer/tokenizer_config.json`` name the Llama tokenizer ``LlamaTokenizerFast`` over a
byte-level ``tokenizer.json``; transformers 5 loads that class with a SentencePiece pre-tokenizer
that changes the tokens (see ``lct_train.data.pipeline_dir``), so compare with diffusers through
``load_diffusers_pipeline(root)``, which passes the tokenizer as ``PreTrainedTokenizerFast``.
The template gives this tokenizer 118 prefix tokens (``crop_start``), not the real one's 95.

``save_tiny_wan_pipeline(root, variant)`` writes a whole ``WanPipeline`` folder::

    root/model_index.json   (tokenizer named T5TokenizerFast, as Wan-AI's -Diffusers checkpoints)
    root/transformer/       tiny WanTransformer3DModel (tests/model/wan: 2 layers, 2 x 12 heads)
    root/vae/               tiny AutoencoderKLWan (codecs.TINY_WAN_CONFIGS: "2.1" 16 channels
                            4x8x8, "2.2" 48 channels 4x16x16 with Wan2.2's residual + patchify)
    root/text_encoder/      tiny UMT5EncoderModel (d_model 16 = the transformer's text_dim)
    root/tokenizer/         a SentencePiece-style Unigram tokenizer (``</s>`` appended, ``<pad>`` 0)
    root/scheduler/         UniPCMultistepScheduler with flow sigmas (Wan's; shift 3.0, 2.2: 5.0)

The "2.2" variant is TI2V-5B's layout (``expand_timesteps``). ``WanPipeline.from_pretrained(root)``
loads either back offline; its tokens and ours come from the same ``T5Tokenizer`` class.

Every weight is seeded, so two calls write the same pipeline. The ``tiny_hunyuan_pipeline`` and
``tiny_wan_pipeline`` fixtures (tests/conftest.py) build one per test session (a few seconds,
mostly imports).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lct_train.data.codecs import (
    TINY_HUNYUAN_CONFIG,
    TINY_HUNYUAN_SEED,
    TINY_WAN_CONFIGS,
    TINY_WAN_SEED,
)
from tests.convert.tiny_hunyuan import TINY_DIFFUSERS_CONFIG, make_tiny_diffusers

# Llama 3's pre-tokenizer split (tokenizer.json of Meta-Llama-3 and llava-llama-3-8b)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
                r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA_BOS, LLAMA_EOS = "<|begin_of_text|>", "<|end_of_text|>"
LLAMA_SPECIAL = [LLAMA_BOS, LLAMA_EOS, "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
CORPUS = [
    "a cat walks on the grass, realistic",
    "A red ball rolls across the room. [SHOT CUT] The camera pans left to a blue door.",
    "Close-up of a smiling woman; she turns and walks away in the rain {}",
]
TINY_LLAMA = dict(hidden_size=TINY_DIFFUSERS_CONFIG["text_embed_dim"], intermediate_size=32,
                  num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                  max_position_embeddings=1024)
TINY_CLIP = dict(hidden_size=TINY_DIFFUSERS_CONFIG["pooled_projection_dim"], intermediate_size=16,
                 num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                 projection_dim=TINY_DIFFUSERS_CONFIG["pooled_projection_dim"])
SCHEDULER_SHIFT = 7.0
REAL_TOKENIZER_CLASS = "LlamaTokenizerFast"  # what the real checkpoint's folder names
SEED = 0


def _template() -> str:
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    return DEFAULT_PROMPT_TEMPLATE["template"]


def tiny_llama_tokenizer():
    """A byte-level BPE tokenizer in Llama 3's style (BOS prepended, right padding)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=LLAMA_SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_template(), *CORPUS], trainer)
    bos = tok.token_to_id(LLAMA_BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{LLAMA_BOS} $A", pair=f"{LLAMA_BOS} $A $B", special_tokens=[(LLAMA_BOS, bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=LLAMA_BOS, eos_token=LLAMA_EOS,
                                   pad_token=LLAMA_EOS, padding_side="right")


def tiny_clip_tokenizer():
    """A CLIP tokenizer (BPE, ``</w>`` word ends, ``<|endoftext|>`` as eos and pad)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[CLIP_BOS, CLIP_EOS], show_progress=False,
                                  initial_alphabet=alphabet, end_of_word_suffix="</w>")
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    for char in sorted(alphabet):  # every byte can end a word
        vocab.setdefault(char + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[tuple(m) for m in model["merges"]])


def tiny_hunyuan_pipeline():
    """The tiny ``HunyuanVideoPipeline`` (fp32, eval), every part seeded."""
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    tokenizer, tokenizer_2 = tiny_llama_tokenizer(), tiny_clip_tokenizer()
    torch.manual_seed(SEED)
    llama = LlamaModel(LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                   eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id, **TINY_LLAMA))
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer_2), bos_token_id=tokenizer_2.bos_token_id,
                                        eos_token_id=tokenizer_2.eos_token_id,
                                        pad_token_id=tokenizer_2.pad_token_id, **TINY_CLIP))
    torch.manual_seed(TINY_HUNYUAN_SEED)
    vae = AutoencoderKLHunyuanVideo(**TINY_HUNYUAN_CONFIG)
    return HunyuanVideoPipeline(
        text_encoder=llama.eval(), tokenizer=tokenizer, transformer=make_tiny_diffusers(SEED),
        vae=vae.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=SCHEDULER_SHIFT),
        text_encoder_2=clip.eval(), tokenizer_2=tokenizer_2)


def _name_tokenizer_as_the_real_checkpoint(root: Path) -> None:
    index_file, config_file = root / "model_index.json", root / "tokenizer" / "tokenizer_config.json"
    index, config = json.loads(index_file.read_text()), json.loads(config_file.read_text())
    index["tokenizer"] = ["transformers", REAL_TOKENIZER_CLASS]
    config["tokenizer_class"] = REAL_TOKENIZER_CLASS
    index_file.write_text(json.dumps(index, indent=2))
    config_file.write_text(json.dumps(config, indent=2))


def save_tiny_hunyuan_pipeline(root: str | Path) -> Path:
    """Writes the tiny pipeline to ``root`` in the diffusers layout; returns ``root``.
    ``HunyuanVideoPipeline.from_pretrained(root)`` loads it back offline."""
    root = Path(root)
    tiny_hunyuan_pipeline().save_pretrained(root, safe_serialization=True)
    _name_tokenizer_as_the_real_checkpoint(root)
    return root


def load_diffusers_pipeline(root: str | Path):
    """diffusers' ``HunyuanVideoPipeline`` of ``root`` with the Llama tokenizer loaded as
    ``PreTrainedTokenizerFast`` (the tokens of ``tokenizer.json``; see the module docstring)."""
    from diffusers import HunyuanVideoPipeline
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(Path(root) / "tokenizer"))
    return HunyuanVideoPipeline.from_pretrained(str(root), tokenizer=tokenizer)


UMT5_SPECIAL = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in umT5
TINY_UMT5 = dict(d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, relative_attention_num_buckets=8,
                 relative_attention_max_distance=16, feed_forward_proj="gated-gelu")
WAN_TOKENIZER_CLASS = "T5TokenizerFast"  # model_index.json of Wan-AI/Wan2.1-T2V-1.3B-Diffusers
WAN_SHIFT = {"2.1": 3.0, "2.2": 5.0}
T5_EXTRA_IDS = 100  # <extra_id_N> tokens that transformers' T5Tokenizer adds to the vocabulary  # the checkpoints' scheduler flow_shift (480p / TI2V-5B)


def tiny_umt5_tokenizer():
    """A SentencePiece-style Unigram tokenizer (``▁`` word starts, ``</s>`` appended)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=200, special_tokens=UMT5_SPECIAL, unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", padding_side="right")


def tiny_wan_pipeline(variant: str = "2.1"):
    """The tiny ``WanPipeline`` (fp32, eval), every part seeded."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    from tests.model.wan.wan_testutils import diffusers_wan, tiny_wan_config

    tokenizer = tiny_umt5_tokenizer()
    torch.manual_seed(SEED)
    umt5 = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer) + T5_EXTRA_IDS, pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.eos_token_id, **TINY_UMT5))
    torch.manual_seed(TINY_WAN_SEED)
    vae = AutoencoderKLWan(**TINY_WAN_CONFIGS[variant])
    channels = vae.config.z_dim
    transformer = diffusers_wan(tiny_wan_config(latent_channels=channels, text_dim=TINY_UMT5["d_model"]), SEED)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=WAN_SHIFT[variant])
    return WanPipeline(tokenizer=tokenizer, text_encoder=umt5.eval(), transformer=transformer, vae=vae.eval(),
                       scheduler=scheduler, expand_timesteps=variant == "2.2")


def save_tiny_wan_pipeline(root: str | Path, variant: str = "2.1") -> Path:
    """Writes the tiny Wan pipeline (``variant`` "2.1" or "2.2") to ``root`` in the diffusers
    layout; returns ``root``. ``WanPipeline.from_pretrained(root)`` loads it back offline."""
    root = Path(root)
    tiny_wan_pipeline(variant).save_pretrained(root, safe_serialization=True)
    index_file, config_file = root / "model_index.json", root / "tokenizer" / "tokenizer_config.json"
    index, config = json.loads(index_file.read_text()), json.loads(config_file.read_text())
    index["tokenizer"] = ["transformers", WAN_TOKENIZER_CLASS]
    config["tokenizer_class"] = WAN_TOKENIZER_CLASS
    index_file.write_text(json.dumps(index, indent=2))
    config_file.write_text(json.dumps(config, indent=2))
    return root
