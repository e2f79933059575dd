"""The shared-prefix plan: literal token sequences in, the exact tree and reads out."""

from cai.backends import prefix


def test_two_orders_two_options_share_the_conversation():
    # prompt AB = [1, 2, 3, 4, 9], prompt BA = [1, 2, 3, 5, 9]; options [7, 8] and [7, 6]
    seqs = [(0, [1, 2, 3, 4, 9, 7, 8], 2), (1, [1, 2, 3, 4, 9, 7, 6], 2),
            (2, [1, 2, 3, 5, 9, 7, 8], 2), (3, [1, 2, 3, 5, 9, 7, 6], 2)]  # fmt: skip
    (root,) = prefix.build(seqs)
    assert (root.ids, root.start, root.reads) == ([1, 2, 3], 0, [])
    ab, ba = root.children
    assert (ab.ids, ab.start) == ([4, 9, 7], 3)
    # position 1 (token 9) predicts the first option token 7, position 2 (token 7) the second (8 or 6)
    assert ab.reads == [(1, 7, 0), (2, 8, 0), (1, 7, 1), (2, 6, 1)]
    # the last option tokens need no pass of their own: nothing is read at or after them
    assert [(c.ids, c.start, c.reads) for c in ab.children] == [([8], 6, []), ([6], 6, [])]
    assert prefix.tokens_run([root]) == 3 + 2 * (3 + 2)
    assert prefix.padded_tokens([(7, 4)]) == 28


def test_second_option_token_is_read_from_the_shared_segment():
    (root,) = prefix.build([(0, [5, 1, 2], 2), (1, [5, 1, 3], 2)])
    assert (root.ids, root.reads) == ([5, 1], [(0, 1, 0), (1, 2, 0), (0, 1, 1), (1, 3, 1)])
    assert [c.ids for c in root.children] == [[2], [3]]


def test_hf_tree_scores_equal_padded_scores():
    from cai import backends

    tiny = backends.load("tiny", cache=False)
    texts = ["\n\nHuman: Which is kinder?\n (A) yes\n (B) no\nThe answer is:",
             "\n\nHuman: Which is kinder?\n (A) no\n (B) yes\nThe answer is:", "Hum"]  # fmt: skip
    options = [[" (A)", " (B)"], [" (A)", " (B)"], ["an", "", " x"]]
    tiny.shared_prefix = False
    padded = tiny.option_logprobs(texts, options)
    tiny.shared_prefix = True
    tree = tiny.option_logprobs(texts, options)
    assert tree[2][1] == 0.0
    assert [[round(v, 4) for v in row] for row in tree] == [[round(v, 4) for v in row] for row in padded]
