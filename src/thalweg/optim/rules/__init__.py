"""The named first-order rules, each a short transform chain on the flat core: torch.optim's
twins (`twins`: SGD, Adagrad, RMSprop, Adadelta, Adam, AdamW) and the contenders
(`contenders`: NAdam, RAdam, Adamax, Lion, Schedule-Free; `large_batch`: LAMB, LARS;
`prodigy`) over the base they share (`named`), with their registry entries (`catalog`)."""
