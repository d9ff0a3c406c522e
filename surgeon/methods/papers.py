"""The papers the catalogues cite, each declared once."""

from surgeon.catalogue import Paper

ECKART_YOUNG = Paper("The approximation of one matrix by another of lower rank",
                     "Eckart and Young", 1936)
ASVD = Paper("ASVD: Activation-aware Singular Value Decomposition for Compressing Large "
             "Language Models", "Yuan et al.", 2023, "2312.05821")
SVD_LLM = Paper("SVD-LLM: Truncation-aware Singular Value Decomposition for Large Language "
                "Model Compression", "Wang et al.", 2024, "2403.07378")
FWSVD = Paper("Language model compression with weighted low-rank factorization",
              "Hsu et al.", 2022, "2207.00112")
SHORTGPT = Paper("ShortGPT: Layers in Large Language Models are More Redundant Than You Expect",
                 "Men et al.", 2024, "2403.03853")
DEEPER_LAYERS = Paper("The Unreasonable Ineffectiveness of the Deeper Layers",
                      "Gromov et al.", 2024, "2403.17887")
REASSESSING = Paper("Reassessing Layer Pruning in LLMs: New Insights and Methods",
                    "Lu et al.", 2024, "2411.15558")
LORA = Paper("LoRA: Low-Rank Adaptation of Large Language Models", "Hu et al.", 2021,
             "2106.09685")
DORA = Paper("DoRA: Weight-Decomposed Low-Rank Adaptation", "Liu et al.", 2024, "2402.09353")
PISSA = Paper("PiSSA: Principal Singular Values and Singular Vectors Adaptation of Large "
              "Language Models", "Meng et al.", 2024, "2404.02948")
EVA = Paper("One Initialization to Rule them All: Fine-tuning via Explained Variance "
            "Adaptation", "Paischer et al.", 2024, "2410.07170")
SBERT = Paper("Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks",
              "Reimers and Gurevych", 2019, "1908.10084")
ACCURACY_NOT_ALL = Paper("Accuracy is Not All You Need", "Dutta et al.", 2024, "2407.09141")
QUAROT = Paper("QuaRot: Outlier-Free 4-Bit Inference in Rotated LLMs", "Ashkboos et al.", 2024,
               "2404.00456")
SPINQUANT = Paper("SpinQuant: LLM Quantization with Learned Rotations", "Liu et al.", 2024,
                  "2405.16406")
SLICEGPT = Paper("SliceGPT: Compress Large Language Models by Deleting Rows and Columns",
                 "Ashkboos et al.", 2024, "2401.15024")
TEAL = Paper("Training-Free Activation Sparsity in Large Language Models", "Liu et al.", 2024,
             "2408.14690")
WINA = Paper("WINA: Weight Informed Neuron Activation for Accelerating Large Language Model "
             "Inference", "Chen et al.", 2025, "2505.19427")
CATS = Paper("CATS: Contextually-Aware Thresholding for Sparsity in Large Language Models",
             "Lee et al.", 2024, "2404.08763")
RSPARSE = Paper("R-Sparse: Rank-Aware Activation Sparsity for Efficient LLM Inference",
                "Zhang et al.", 2025, "2504.19449")
LAROSA = Paper("La RoSA: Enhancing LLM Efficiency via Layerwise Rotated Sparse Activation",
               "Liu et al.", 2025, "2507.01299")
