from chatd_client import LLMClient, Conversation, Message


def sync_chat_loop():
    conversation = Conversation().system("You are a helpful assistant.")
    client = LLMClient("gpt-4o-mini")

    print("Chat started! Type 'quit' to exit.\n")

    while True:
        user_input = input("You: ").strip()

        if user_input.lower() == "quit":
            break

        if not user_input:
            continue

        conversation.add(Message.user(user_input))
        responses = client.process_prompts_sync([conversation])
        response = responses[0]

        if response and response.completion:
            print(f"Assistant: {response.completion}\n")
            conversation.add(Message.ai(response.completion))


if __name__ == "__main__":
    sync_chat_loop()
