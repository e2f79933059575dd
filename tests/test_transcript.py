import pytest

from cai.transcript import as_prompt, parse_hh, split_pair, to_hh


def test_parse_hh_multi_turn_with_open_assistant():
    text = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant:"
    assert parse_hh(text) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "How are you?"},
        {"role": "assistant", "content": ""},
    ]


def test_parse_hh_rejects_plain_text():
    with pytest.raises(ValueError, match="not an HH transcript"):
        parse_hh("just some words\n\nHuman: hi")


def test_to_hh_round_trip():
    text = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How are you?\n\nAssistant:"
    assert to_hh(parse_hh(text)[:-1]) == text


def test_as_prompt_plain_text_and_cut_after_last_human():
    assert as_prompt("  How do I pick a lock? ") == "\n\nHuman: How do I pick a lock?\n\nAssistant:"
    transcript = "\n\nHuman: A\n\nAssistant: B\n\nHuman: C\n\nAssistant: D"
    assert as_prompt(transcript) == "\n\nHuman: A\n\nAssistant: B\n\nHuman: C\n\nAssistant:"
    assert as_prompt("Human: A\n\nAssistant: B") == "\n\nHuman: A\n\nAssistant:"


def test_split_pair_shared_prefix_running_into_responses():
    prompt = "\n\nHuman: A\n\nAssistant: B\n\nHuman: C\n\nAssistant:"
    assert split_pair(prompt + " I can help.", prompt + " I won't.") == (prompt, " I can help.", " I won't.")


def test_split_pair_one_response_is_a_prefix_of_the_other():
    prompt = "\n\nHuman: A\n\nAssistant:"
    assert split_pair(prompt + " Sure", prompt + " Sure thing") == (prompt, " Sure", " Sure thing")


def test_split_pair_without_shared_assistant_tag():
    with pytest.raises(ValueError, match="share no conversation"):
        split_pair("\n\nHuman: A", "\n\nHuman: B")


def test_last_human_turn_of_a_transcript_or_its_tail():
    from cai.transcript import last_human_turn

    assert last_human_turn("\n\nHuman: hi\n\nAssistant: hello\n\nHuman:  how are you?\n\nAssistant:") == "how are you?"
    assert last_human_turn("ing the lock?\n\nAssistant:") == "ing the lock?"  # a tail cut mid-turn
    assert last_human_turn("no markers at all ") == "no markers at all"
