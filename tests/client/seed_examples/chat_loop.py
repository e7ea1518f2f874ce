import asyncio
from chatd_client import LLMClient, Conversation, Message


async def chat_loop():
    conversation = Conversation().system("You are a helpful assistant.")
    client = LLMClient("gpt-4o-mini")

    print("Chat started! Type 'quit' to exit.\n")

    while True:
        user_input = input("You: ").strip()

        if user_input.lower() in ["quit", "exit"]:
            print("Goodbye!")
            break

        if not user_input:
            continue

        # Add user message
        conversation.add(Message.user(user_input))

        # Get response
        responses = await client.process_prompts_async([conversation])
        response = responses[0]

        if response and response.completion:
            print(f"Assistant: {response.completion}\n")
            # Add assistant response to maintain history
            conversation.add(Message.ai(response.completion))
        else:
            print("Assistant: Sorry, I couldn't process that.\n")
            conversation.messages.pop()  # Remove failed user message


if __name__ == "__main__":
    asyncio.run(chat_loop())
