import asyncio
from chatd_client import LLMClient, Conversation, Message


async def chat_with_commands():
    conversation = Conversation().system(
        "You are a helpful assistant. Keep responses concise."
    )
    client = LLMClient("gpt-4o-mini", max_new_tokens=500)

    print("Commands: 'quit', 'history', 'clear'\n")

    while True:
        user_input = input("You: ").strip()

        # Handle commands
        if user_input.lower() == "quit":
            break

        if user_input.lower() == "history":
            print("\nConversation History:")
            for i, msg in enumerate(conversation.messages, 1):
                text = msg.completion or "[No text]"
                preview = text[:80] + "..." if len(text) > 80 else text
                print(f"  {i}. {msg.role}: {preview}")
            print()
            continue

        if user_input.lower() == "clear":
            conversation = Conversation().system(
                "You are a helpful assistant. Keep responses concise."
            )
            print("History cleared!\n")
            continue

        if not user_input:
            continue

        conversation.add(Message.user(user_input))

        try:
            responses = await client.process_prompts_async([conversation])
            response = responses[0]

            if response and response.completion:
                print(f"Assistant: {response.completion}\n")
                conversation.add(Message.ai(response.completion))
            else:
                print("Assistant: No response received.\n")
                conversation.messages.pop()

        except Exception as e:
            print(f"Error: {e}\n")
            if conversation.messages and conversation.messages[-1].role == "user":
                conversation.messages.pop()


if __name__ == "__main__":
    asyncio.run(chat_with_commands())
